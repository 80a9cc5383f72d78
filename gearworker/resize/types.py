"""The types both ends of a ``resize`` job share: options, limits, copies, the error.

This module imports nothing else from :mod:`gearworker.resize`, so the wire
format (:mod:`.wire`), the libvips engine (:mod:`.engine`) and the file-mode
sandbox (:mod:`.files`) can all build on it without an import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import GearworkerError

__all__ = [
    "DEFAULT_SIZES",
    "FORMATS",
    "MAX_COPIES",
    "MAX_SIZE",
    "MEDIA_TYPES",
    "Copy",
    "ImageError",
    "Limits",
    "OnProgress",
    "Options",
    "Resized",
    "Source",
]

DEFAULT_SIZES = (2048, 1024, 512, 256)
MAX_SIZE = 16384  # largest long side a copy may ask for
MAX_COPIES = 16

#: Output formats and their file extensions.
FORMATS = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "png": "png"}
#: Media types of the output formats (and of the input formats, and the "jpg" spelling): what a web page serves.
MEDIA_TYPES = {
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "tiff": "image/tiff",
    "avif": "image/avif",
}
_OPTION_KEYS = {"sizes", "format", "quality", "background", "keep_metadata"}

#: ``progress(i, n)``: called after copy ``i`` of ``n`` is made.
OnProgress = Callable[[int, int], None]


class ImageError(GearworkerError, ValueError):
    """The job's input cannot be resized: the message says why (the job fails, the worker lives on)."""


@dataclass(frozen=True, slots=True)
class Copy:
    """One resized copy: ``size`` is the requested bound on the long side, ``data`` the encoded image."""

    size: int
    width: int
    height: int
    format: str
    data: bytes

    @property
    def media_type(self) -> str:
        """The copy's media type (``image/jpeg``...), for serving it over HTTP."""
        return MEDIA_TYPES.get(self.format.lower(), "application/octet-stream")

    @property
    def extension(self) -> str:
        """The file extension for the copy's format, without the dot (``jpg`` for JPEG)."""
        fmt = self.format.lower()
        return FORMATS.get(fmt, fmt)


@dataclass(frozen=True, slots=True)
class Options:
    """What copies to make.  ``sizes`` are long-side bounds, largest first."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    format: str = "jpeg"
    quality: int = 85
    background: tuple[int, int, int] = (255, 255, 255)  # where alpha is flattened (JPEG)
    keep_metadata: bool = False  # False: only the ICC profile is kept (no GPS, no camera data)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Options:
        """Validate options from a job; unknown names are errors (a typo must not pass silently)."""
        unknown = set(obj) - _OPTION_KEYS
        if unknown:
            raise ImageError(f"unknown option(s) {sorted(unknown)}; known: {sorted(_OPTION_KEYS)}")
        return cls(
            sizes=_sizes(obj.get("sizes")),
            format=_format(obj.get("format", "jpeg")),
            quality=_quality(obj.get("quality", 85)),
            background=_colour(obj.get("background", "#ffffff")),
            keep_metadata=bool(obj.get("keep_metadata", False)),
        )

    def to_json(self) -> dict[str, Any]:
        """The options as :meth:`from_json` reads them."""
        r, g, b = self.background
        return {
            "sizes": list(self.sizes),
            "format": self.format,
            "quality": self.quality,
            "background": f"#{r:02x}{g:02x}{b:02x}",
            "keep_metadata": self.keep_metadata,
        }


def _sizes(value: Any) -> tuple[int, ...]:
    if value is None:
        return DEFAULT_SIZES
    if not isinstance(value, list) or not value or len(value) > MAX_COPIES:
        raise ImageError(f"sizes must be a list of 1 to {MAX_COPIES} integers, got {value!r}")
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_SIZE:
            raise ImageError(f"each size must be an integer from 1 to {MAX_SIZE}, got {v!r}")
    return tuple(sorted(set(value), reverse=True))  # largest first: each copy is made from the previous


def _format(value: Any) -> str:
    name = str(value).lower().replace("jpg", "jpeg")
    if name not in FORMATS:
        raise ImageError(f"format must be one of {sorted(FORMATS)}, got {value!r}")
    return name


def _quality(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
        raise ImageError(f"quality must be an integer from 1 to 100, got {value!r}")
    return value


def _colour(value: Any) -> tuple[int, int, int]:
    if not isinstance(value, str) or not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        raise ImageError(f"background must look like '#rrggbb', got {value!r}")
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a worker accepts (from the settings ``max_upload_bytes``, ``max_image_pixels``, ``storage_roots``)."""

    max_upload_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 100_000_000
    storage_roots: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Source:
    """The input image as loaded: format, and dimensions after EXIF orientation."""

    format: str
    width: int
    height: int


@dataclass(slots=True)
class Resized:
    """What :func:`gearworker.resize.engine.resize` made: the source as loaded and each copy, largest first."""

    source: Source
    copies: list[Copy] = field(default_factory=list)
