"""The fast path: resizing with libvips (pyvips).

The header is read alone first so that a decompression bomb is refused before
any pixel is decoded, JPEG and WebP shrink while loading, and each copy is made
from the previous, larger one.  pyvips is imported on first use only (by
:func:`probe` or :func:`resize`), never when this module is imported: the web
app and the worker's parent process must not load libvips, because a forked
child of a process that ran libvips can hang.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .types import Copy, ImageError, Limits, OnProgress, Options, Resized, Source

__all__ = ["LOADERS", "plan", "probe", "resize"]

#: The libvips loaders we accept, and the format name each stands for.  Other
#: loaders (SVG, HEIF, raw matrices...) are refused: less attack surface.
LOADERS = {
    "jpegload_buffer": "jpeg",
    "pngload_buffer": "png",
    "webpload_buffer": "webp",
    "gifload_buffer": "gif",
    "tiffload_buffer": "tiff",
}
#: How strict decoding is.  A JPEG cut short fails, but libjpeg's warnings ("extraneous bytes before marker")
#: are common in camera files that display fine, so they pass; elsewhere any decoder error fails (a truncated
#: uncompressed TIFF otherwise decodes with its missing rows left black).
_FAIL_ON = {"jpeg": "truncated"}

_vips_ready = False


def _vips() -> Any:
    """Import and set up pyvips once per process."""
    global _vips_ready
    import pyvips

    if not _vips_ready:
        # Parallelism comes from the pool's processes: 2 processes x 1 thread beat 1 x 2 threads by 1.7x here.
        pyvips.concurrency_set(int(os.environ.get("VIPS_CONCURRENCY", "1")))
        # Each job is a new image: the operation cache would only keep old pixels alive.
        pyvips.cache_set_max(0)
        _vips_ready = True
    return pyvips


def _vips_detail(e: Exception) -> str:
    """libvips errors read 'unable to call X\\n  VipsJpeg: what went wrong': keep what went wrong."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    detail = [line for line in lines if not line.startswith("unable to call")]
    return "; ".join(detail or lines)[:300]


def probe(data: bytes, limits: Limits) -> Source:
    """Read the header only (no pixels decoded) and refuse what we will not decode."""
    pyvips = _vips()
    if not data:
        raise ImageError("empty input: no image bytes")
    try:
        header = pyvips.Image.new_from_buffer(data, "")
    except pyvips.Error as e:
        raise ImageError(f"not an image we can read ({_vips_detail(e)})") from e
    loader = header.get("vips-loader") if header.get_typeof("vips-loader") else ""
    if loader not in LOADERS:
        raise ImageError(
            f"unsupported image format ({loader.removesuffix('_buffer') or 'unknown'}); "
            f"accepted: JPEG, PNG, WebP, GIF, TIFF"
        )
    width, height = header.width, header.height
    if width * height > limits.max_image_pixels:
        raise ImageError(
            f"image of {width}x{height} = {width * height} pixels is over the limit of "
            f"{limits.max_image_pixels} pixels (max_image_pixels)"
        )
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees: displayed sideways
        width, height = height, width
    return Source(LOADERS[loader], width, height)


def plan(width: int, height: int, sizes: Sequence[int]) -> list[tuple[int, int, int]]:
    """(size, width, height) of each copy, largest first.

    One scale for both axes keeps the aspect ratio exact at every step.  Bounds
    at or over the long side never upscale: they collapse into one copy at the
    original dimensions, labelled with the smallest such bound.
    """
    long_side = max(width, height)
    copies: list[tuple[int, int, int]] = []
    for size in sorted(set(sizes), reverse=True):
        if size >= long_side:
            copies = [(size, width, height)]  # replace a larger bound's identical copy
            continue
        scale = size / long_side
        copies.append((size, max(1, round(width * scale)), max(1, round(height * scale))))
    return copies


def resize(data: bytes, options: Options, limits: Limits, progress: OnProgress | None = None) -> Resized:
    """Make every copy ``options`` asks for from image bytes; ``progress(i, n)`` after each one."""
    pyvips = _vips()
    source = probe(data, limits)
    steps = plan(source.width, source.height, options.sizes)
    result = Resized(source)
    image = None
    for i, (size, width, height) in enumerate(steps, 1):
        try:
            if image is None:
                # Shrink-on-load, EXIF orientation applied; fail_on only works in option_string
                # (the fail_on= keyword of thumbnail_buffer was silently ignored, pyvips 3.2).
                image = pyvips.Image.thumbnail_buffer(
                    data,
                    width,
                    height=height,
                    size="force",
                    option_string=f"fail_on={_FAIL_ON.get(source.format, 'error')}",
                )
                image = _prepare(image, options)
            else:
                image = image.thumbnail_image(width, height=height, size="force")
            # Materialise: the next, smaller copy then reads these pixels instead of decoding the file again.
            image = image.copy_memory()
            encoded = _encode(image, options)
        except pyvips.Error as e:
            raise ImageError(f"cannot decode this {source.format} image ({_vips_detail(e)})") from e
        result.copies.append(Copy(size, image.width, image.height, options.format, encoded))
        if progress is not None:
            progress(i, len(steps))
    return result


def _prepare(image: Any, options: Options) -> Any:
    """Once, on the largest copy: flatten alpha onto the background where the format has none."""
    if image.hasalpha() and options.format == "jpeg":
        # A plain RGB conversion would turn transparent areas black.
        image = image.flatten(background=list(options.background))
    return image


def _encode(image: Any, options: Options) -> bytes:
    pyvips = _vips()
    keep = pyvips.enums.ForeignKeep.ALL if options.keep_metadata else pyvips.enums.ForeignKeep.ICC
    q = options.quality
    if options.format == "jpeg":
        data = image.jpegsave_buffer(Q=q, interlace=True, optimize_coding=True, keep=keep)
    elif options.format == "webp":
        data = image.webpsave_buffer(Q=q, keep=keep)
    elif options.format == "avif":
        data = image.heifsave_buffer(Q=q, compression="av1", effort=2, keep=keep)
    else:
        data = image.pngsave_buffer(compression=6, keep=keep)
    return bytes(data)
