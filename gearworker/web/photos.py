"""Photos: what the app knows of one upload, its copies, and the format it asks for.

Kept on disk by :mod:`gearworker.web.storage`, keyed by random ids the app
made itself, so a URL can only ever name a photo we stored (never a path).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ..resize import Copy
from .events import revision

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
        if head[offset : offset + len(magic)] == magic and (name != "WebP" or head[:4] == b"RIFF"):
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
class CopyFile:
    """One resized copy as kept on disk: what it shows, and ``file``, its name in the photo's folder.

    The bytes stay on disk: :class:`gearworker.resize.Copy` is the same copy in memory, as a job returns it.
    """

    size: int
    width: int
    height: int
    format: str
    bytes: int
    file: str

    @property
    def media_type(self) -> str:
        """What to serve it as: the same as the in-memory copy would say."""
        return Copy(self.size, self.width, self.height, self.format, b"").media_type

    @property
    def extension(self) -> str:
        return Copy(self.size, self.width, self.height, self.format, b"").extension

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "bytes": self.bytes,
            "file": self.file,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CopyFile:
        return cls(
            int(obj["size"]),
            int(obj["width"]),
            int(obj["height"]),
            str(obj["format"]),
            int(obj["bytes"]),
            str(obj["file"]),
        )


#: States a photo can be in; the first three are "in progress".
PHOTO_STATES = ("queued", "waiting", "resizing", "done", "failed")
#: Output formats offered on the page; "auto" is JPEG, or PNG/WebP for a source with transparency.
OUTPUT_FORMATS = ("auto", "jpeg", "webp", "avif", "png")


@dataclass
class Photo:
    """One uploaded photo and what became of it; ``view()`` is what the page sees."""

    id: str
    key: str
    name: str
    upload_bytes: int
    created: float = field(default_factory=time.time)
    format: str = "jpeg"  # the output format asked of the worker
    source_format: str = ""
    state: str = "queued"  # queued (waiting: no worker) -> resizing -> done | failed
    numerator: int = 0
    denominator: int = 0
    error: str | None = None
    copies: list[CopyFile] = field(default_factory=list)

    @property
    def stored_bytes(self) -> int:
        return self.upload_bytes + sum(c.bytes for c in self.copies)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    def to_json(self) -> dict[str, Any]:
        """Everything needed to load the photo again after a restart."""
        return {
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "upload_bytes": self.upload_bytes,
            "created": self.created,
            "format": self.format,
            "source_format": self.source_format,
            "state": self.state,
            "error": self.error,
            "copies": [c.to_json() for c in self.copies],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Photo:
        return cls(
            id=str(obj["id"]),
            key=str(obj.get("key", "")),
            name=str(obj["name"]),
            upload_bytes=int(obj["upload_bytes"]),
            created=float(obj["created"]),
            format=str(obj.get("format", "jpeg")),
            source_format=str(obj.get("source_format", "")),
            state=str(obj["state"]),
            error=obj.get("error"),
            copies=[CopyFile.from_json(c) for c in obj.get("copies", [])],
        )

    def view(self) -> dict[str, Any]:
        percent = (
            100 if self.state == "done" else (round(100 * self.numerator / self.denominator) if self.denominator else 0)
        )
        stem = self.name.rsplit(".", 1)[0] or "photo"
        return {
            "revision": revision(),  # the page keeps the newest view of a photo (see revision())
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "state": self.state,
            "error": self.error,
            "created": self.created,
            "format": self.format,
            "upload_size": human_size(self.upload_bytes),
            "numerator": self.numerator,
            "denominator": self.denominator,
            "percent": percent,
            "copies": [
                {
                    "index": i,
                    "size": c.size,
                    "width": c.width,
                    "height": c.height,
                    "format": c.format,
                    "bytes": c.bytes,
                    "human_bytes": human_size(c.bytes),
                    "url": f"/photos/{self.id}/{i}",
                    "download": f"/photos/{self.id}/{i}?download=1",
                    "filename": f"{stem}-{c.width}x{c.height}.{c.extension}",
                }
                for i, c in enumerate(self.copies)
            ],
        }


def has_alpha(data: bytes) -> bool:
    """Whether an image may be transparent, from its header bytes only (no decoding).

    PNG: colour type with alpha, or a ``tRNS`` chunk before the pixels; WebP:
    the VP8X alpha flag or a lossless stream's alpha hint; GIF: a graphic
    control extension with a transparent colour.  TIFF is taken as opaque.
    """
    kind = sniff(data[:16])
    if kind == "PNG":
        if len(data) > 25 and data[25] in (4, 6):
            return True
        idat = data.find(b"IDAT", 8)
        return data.find(b"tRNS", 8, idat if idat > 0 else len(data)) > 0
    if kind == "WebP":
        chunk = data[12:16]
        if chunk == b"VP8X":
            return len(data) > 20 and bool(data[20] & 0x10)
        if chunk == b"VP8L":
            return len(data) > 24 and bool(data[24] & 0x10)  # the alpha_is_used hint in the header bits
        return False
    if kind == "GIF":
        at = data.find(b"\x21\xf9\x04")
        return at > 0 and len(data) > at + 3 and bool(data[at + 3] & 0x01)
    return False


def output_format(choice: str, data: bytes) -> str:
    """The format to ask of the worker: ``auto`` keeps transparency (PNG, or WebP for a WebP source)."""
    if choice != "auto":
        return choice
    if has_alpha(data):
        return "webp" if sniff(data[:16]) == "WebP" else "png"
    return "jpeg"
