"""Photos: reading an upload within its size limit, and keeping the resized copies.

Copies live in memory, keyed by random ids the app made itself, so a URL can
only ever name a copy we produced (never a path on disk).  The store has a
byte budget: the oldest photos are dropped first.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..resize import Copy

#: Magic numbers of the formats the resize handler decodes.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WebP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
ACCEPTED = "JPEG, PNG, WebP, GIF or TIFF"


def sniff(head: bytes) -> str | None:
    """The image format named by the first bytes of a file, or None."""
    for magic, offset, name in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic and (name != "WebP" or head[:4] == b"RIFF"):
            return name
    return None


def new_id() -> str:
    """An unguessable id for a photo."""
    return secrets.token_hex(16)


def human_size(n: int) -> str:
    """``1536`` -> ``"1.5 KB"``; plain words for people, not exact bytes."""
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@dataclass
class Photo:
    """One uploaded photo and what became of it; ``view()`` is what the page sees."""

    id: str
    key: str
    name: str
    upload_bytes: int
    state: str = "queued"  # queued -> resizing -> done | failed
    numerator: int = 0
    denominator: int = 0
    error: str | None = None
    handle: str | None = None
    copies: list[Copy] = field(default_factory=list)  # as unpack_result gave them; Copy knows its media_type

    @property
    def stored_bytes(self) -> int:
        return sum(len(c.data) for c in self.copies)

    def view(self) -> dict[str, Any]:
        percent = 100 if self.state == "done" else (
            round(100 * self.numerator / self.denominator) if self.denominator else 0)
        stem = self.name.rsplit(".", 1)[0] or "photo"
        return {
            "id": self.id, "key": self.key, "name": self.name, "state": self.state, "error": self.error,
            "upload_size": human_size(self.upload_bytes), "numerator": self.numerator,
            "denominator": self.denominator, "percent": percent,
            "copies": [
                {"index": i, "size": c.size, "width": c.width, "height": c.height, "format": c.format,
                 "bytes": len(c.data), "human_bytes": human_size(len(c.data)),
                 "url": f"/photos/{self.id}/{i}",
                 "download": f"/photos/{self.id}/{i}?download=1",
                 "filename": f"{stem}-{c.width}x{c.height}.{c.extension}"}
                for i, c in enumerate(self.copies)
            ],
        }


class PhotoStore:
    """Photos by id, within a byte budget (oldest dropped first)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._photos: OrderedDict[str, Photo] = OrderedDict()

    def __len__(self) -> int:
        return len(self._photos)

    def add(self, photo: Photo) -> None:
        self._photos[photo.id] = photo

    def get(self, photo_id: str) -> Photo | None:
        return self._photos.get(photo_id)

    def copy(self, photo_id: str, index: int) -> Copy | None:
        photo = self._photos.get(photo_id)
        if photo is None or not 0 <= index < len(photo.copies):
            return None
        return photo.copies[index]

    def trim(self) -> None:
        """Drop the oldest finished photos until the copies fit the budget."""
        total = sum(p.stored_bytes for p in self._photos.values())
        for photo_id in list(self._photos):
            if total <= self.budget:
                return
            photo = self._photos[photo_id]
            if photo.state in ("done", "failed"):
                total -= photo.stored_bytes
                del self._photos[photo_id]
