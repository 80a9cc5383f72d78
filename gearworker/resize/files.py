"""File mode's sandbox: reading a source and writing the copies, only inside the storage roots.

For workers that share a file system with their clients.  Every path is
resolved with all symlinks followed before it is checked against the roots,
``..`` is refused outright, the source is opened with ``O_NOFOLLOW`` (a symlink
swapped in after the check is not followed) and each copy is written to a
temporary file and renamed over its target (a symlink planted at the target
is replaced, never written through; a reader never sees half a file).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .types import ImageError, Limits, Resized

__all__ = ["default_name", "inside_roots", "read_source", "write_copies"]


def inside_roots(path: str, roots: Iterable[str], *, what: str) -> Path:
    """``path`` with every symlink resolved, if it lies inside one of ``roots``; else :class:`ImageError`."""
    roots = list(roots)
    if not roots:
        raise ImageError("file mode is off on this worker (no storage_roots configured); send the image bytes")
    if "\x00" in path or not os.path.isabs(path):
        raise ImageError(f"{what} must be an absolute path, got {path!r}")
    if ".." in Path(path).parts:
        raise ImageError(f"{what} {path!r} contains '..'")
    real = Path(os.path.realpath(path))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if real.is_relative_to(real_root):
            return real
    raise ImageError(f"{what} {path!r} is outside the storage roots (it resolves to {str(real)!r})")


def read_source(path: str, limits: Limits) -> bytes:
    """Read a file-mode source: a regular file inside the roots, no larger than ``max_upload_bytes``."""
    real = inside_roots(path, limits.storage_roots, what="source")
    try:
        # O_NOFOLLOW: a symlink swapped in after the check above is refused, not followed.
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ImageError(f"cannot open source {path!r}: {e.strerror}") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ImageError(f"source {path!r} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limits.max_upload_bytes:
            raise ImageError(f"source of {st.st_size} bytes is over the limit of {limits.max_upload_bytes} bytes")
        return f.read(limits.max_upload_bytes + 1)


def default_name(source: str) -> str:
    """The file name stem copies of ``source`` get when the job names none: the source's stem, made safe."""
    return re.sub(r"[^\w.-]", "_", Path(source).stem) or "image"


def write_copies(result: Resized, output_dir: str, name: str, limits: Limits) -> list[dict[str, Any]]:
    """Write each copy as ``<name>-<size>.<ext>`` atomically (a reader never sees half a file)."""
    folder = inside_roots(output_dir, limits.storage_roots, what="output_dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ImageError(f"cannot create output_dir {output_dir!r}: {e.strerror}") from e
    folder = inside_roots(str(folder), limits.storage_roots, what="output_dir")  # mkdir raced a symlink in?
    written = []
    for c in result.copies:
        target = folder / f"{name}-{c.size}.{c.extension}"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(c.data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)  # replaces a symlink at target, never writes through it
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(
            {
                "size": c.size,
                "width": c.width,
                "height": c.height,
                "format": c.format,
                "path": str(target),
                "bytes": len(c.data),
            }
        )
    return written
