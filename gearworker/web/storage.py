"""Photos on disk: originals, copies and metadata that survive a restart of the web app.

One folder per photo under the storage root (the compose ``photos`` volume)::

    <root>/<id>/photo.json     what the page shows (state, copies, names)
    <root>/<id>/original       the upload as received
    <root>/<id>/<size>.<ext>   each resized copy

Ids are 32 random hex digits made here; only folders named so are loaded,
and every file name served comes from ``photo.json`` written by this module,
never from a request.  Every write goes to a temporary file first and is
renamed into place, so a crash leaves the old version or the new, never half
a file.  Retention keeps at most ``max_photos`` photos and ``max_bytes``
bytes, dropping the oldest finished photos first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import structlog

from .photos import Photo

log = structlog.get_logger("gearworker.web")

_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_FILE_RE = re.compile(r"^[\w.-]{1,100}$")
META = "photo.json"
ORIGINAL = "original"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # a worker in another container reads these (file mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PhotoStore:
    """The photos under ``root``, newest last in memory, each one's files in its own folder."""

    def __init__(self, root: str | os.PathLike[str], *, max_photos: int = 500, max_bytes: int = 2 * 1024**3) -> None:
        self.root = Path(root).resolve()
        self.max_photos = max_photos
        self.max_bytes = max_bytes
        self._photos: dict[str, Photo] = {}

    def __len__(self) -> int:
        return len(self._photos)

    def load(self) -> list[Photo]:
        """Read every photo under the root; returns those a restart interrupted (to resize again)."""
        self.root.mkdir(parents=True, exist_ok=True)
        found: list[Photo] = []
        for folder in self.root.iterdir():
            if not _ID_RE.match(folder.name) or not folder.is_dir():
                continue
            try:
                photo = Photo.from_json(json.loads((folder / META).read_text()))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("web.photo.unreadable", photo=folder.name, error=str(e))
                continue
            if photo.id != folder.name or any(not _FILE_RE.match(c.file) for c in photo.copies):
                log.warning("web.photo.unreadable", photo=folder.name, error="metadata names other files")
                continue
            found.append(photo)
        found.sort(key=lambda p: p.created)
        self._photos = {p.id: p for p in found}
        interrupted = [p for p in found if not p.finished and self.original(p).is_file()]
        log.info("web.photos.loaded", root=str(self.root), photos=len(found), interrupted=len(interrupted))
        return interrupted

    def folder(self, photo: Photo | str) -> Path:
        """The folder of a photo (``photo`` or its id, which must be one we made)."""
        photo_id = photo if isinstance(photo, str) else photo.id
        if not _ID_RE.match(photo_id):
            raise ValueError(f"not a photo id: {photo_id!r}")
        return self.root / photo_id

    def original(self, photo: Photo) -> Path:
        return self.folder(photo) / ORIGINAL

    def add(self, photo: Photo, original: BinaryIO) -> None:
        """Store a new upload, copied from a file object (blocking I/O: call it in a thread)."""
        folder = self.folder(photo)
        folder.mkdir(parents=True, exist_ok=False)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".original-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(original, f, 1024 * 1024)  # in chunks: the upload is never whole in memory
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / ORIGINAL)
        self.save(photo)
        self._photos[photo.id] = photo

    def save(self, photo: Photo) -> None:
        """Write the photo's metadata (its state and copies) again."""
        write_atomic(self.folder(photo) / META, json.dumps(photo.to_json()).encode())

    def write_copy(self, photo: Photo, file: str, data: bytes) -> None:
        """Write one resized copy into the photo's folder."""
        if not _FILE_RE.match(file) or file in (META, ORIGINAL):
            raise ValueError(f"not a copy file name: {file!r}")
        write_atomic(self.folder(photo) / file, data)

    def get(self, photo_id: str) -> Photo | None:
        return self._photos.get(photo_id)

    def copy_path(self, photo_id: str, index: int) -> tuple[Photo, Path] | None:
        """The photo and the file of its copy ``index``, if both exist."""
        photo = self._photos.get(photo_id)
        if photo is None or not 0 <= index < len(photo.copies):
            return None
        return photo, self.folder(photo) / photo.copies[index].file

    def page(self, offset: int, limit: int) -> list[Photo]:
        """Photos newest first, ``limit`` of them after skipping ``offset``."""
        newest = sorted(self._photos.values(), key=lambda p: p.created, reverse=True)
        return newest[offset : offset + limit]

    def delete(self, photo_id: str) -> bool:
        """Remove a photo and its files; False when there is no such photo."""
        photo = self._photos.pop(photo_id, None)
        if photo is None:
            return False
        shutil.rmtree(self.folder(photo), ignore_errors=True)
        return True

    @property
    def stored_bytes(self) -> int:
        return sum(p.stored_bytes for p in self._photos.values())

    def trim(self) -> list[str]:
        """Drop the oldest finished photos past ``max_photos`` or ``max_bytes``; returns their ids."""
        count, total = len(self._photos), self.stored_bytes
        dropped: list[str] = []
        for photo in sorted(self._photos.values(), key=lambda p: p.created):
            if count <= self.max_photos and total <= self.max_bytes:
                break
            if photo.finished:  # one being resized stays: its worker will write to its folder
                count, total = count - 1, total - photo.stored_bytes
                self.delete(photo.id)
                dropped.append(photo.id)
        if dropped:
            log.info("web.photos.trimmed", dropped=len(dropped), photos=count, bytes=total)
        return dropped
