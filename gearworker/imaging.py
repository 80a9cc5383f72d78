"""Resizing photos: the wire formats of the ``resize`` job and its fast path.

Client side (no libvips needed)::

    from gearworker.imaging import pack_request, unpack_result
    workload = pack_request(photo_bytes, sizes=[1024, 256], format="webp")
    for copy in unpack_result(result):      # largest first
        print(copy.size, copy.width, copy.height, copy.format, len(copy.data))

Worker side, :func:`run` turns a workload into a result.  A workload is one of

* raw image bytes (JPEG, PNG, WebP, GIF, TIFF): default options;
* ``GWIMG1\\n<JSON options>\\n<image bytes>`` (what :func:`pack_request` makes);
* a JSON object: ``{"image_b64": ...}`` plus options, or file mode
  ``{"source": PATH, "output_dir": PATH}`` plus options, for workers that share
  a file system with the client (paths must lie inside ``storage_roots``).

Bytes-mode results are ``GWRES1\\n<JSON header>\\n<copies, concatenated>``; the
header gives each copy's size, dimensions, format, offset and length.  File
mode returns JSON naming the files written.  ``docs/resize.md`` has the details.

The resizing uses libvips (pyvips): the header is read alone first so that a
decompression bomb is refused before any pixel is decoded, JPEG and WebP shrink
while loading, and each copy is made from the previous, larger one.  pyvips is
imported on first use only, so the web app and the worker's parent process
never load libvips (a forked child of a process that ran libvips can hang).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GearworkerError

REQUEST_MAGIC = b"GWIMG1\n"
RESULT_MAGIC = b"GWRES1\n"
DEFAULT_SIZES = (2048, 1024, 512, 256)
MAX_SIZE = 16384  # largest long side a copy may ask for
MAX_COPIES = 16
_MAX_HEADER = 64 * 1024  # a JSON header line longer than this is not ours

#: Output formats and their file extensions.
FORMATS = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "png": "png"}
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
_OPTION_KEYS = {"sizes", "format", "quality", "background", "keep_metadata"}
_FILE_KEYS = {"source", "output_dir", "name"}

Progress = Callable[[int, int], None]


class ImageError(GearworkerError, ValueError):
    """The job's input cannot be resized: the message says why (the job fails, the worker lives on)."""


@dataclass(frozen=True, slots=True)
class Copy:
    """One resized copy: ``size`` is the requested bound on the long side."""

    size: int
    width: int
    height: int
    format: str
    data: bytes


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
        return {"sizes": list(self.sizes), "format": self.format, "quality": self.quality,
                "background": f"#{r:02x}{g:02x}{b:02x}", "keep_metadata": self.keep_metadata}


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
class Request:
    """A parsed workload: bytes mode sets ``image``, file mode ``source`` and ``output_dir``."""

    options: Options
    image: bytes | None = None
    source: str | None = None
    output_dir: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """The input image as loaded: format, and dimensions after EXIF orientation."""

    format: str
    width: int
    height: int


@dataclass(slots=True)
class Result:
    """What :func:`resize` made."""

    source: Source
    copies: list[Copy] = field(default_factory=list)


# --- wire formats -------------------------------------------------------------------------------------------------


def pack_request(image: bytes, *, sizes: list[int] | None = None, format: str = "jpeg", quality: int = 85) -> bytes:
    """Build a ``resize`` workload carrying ``image`` and the options (checked here, so errors show early)."""
    options = Options.from_json({"sizes": sizes, "format": format, "quality": quality})
    header = json.dumps(options.to_json(), separators=(",", ":")).encode()
    return REQUEST_MAGIC + header + b"\n" + image


def parse_request(workload: bytes, limits: Limits) -> Request:
    """Tell the workload's kind apart and validate it; raises :class:`ImageError`."""
    # The limit is on the image; the options header may add up to _MAX_HEADER
    # bytes (base64 adds a third), so that what the web app accepts the worker does too.
    if len(workload) > limits.max_upload_bytes * 4 // 3 + _MAX_HEADER:
        raise ImageError(f"upload of {len(workload)} bytes is over the limit of {limits.max_upload_bytes} bytes")
    if workload.startswith(REQUEST_MAGIC):
        header, image = _split_header(workload, REQUEST_MAGIC, "request")
        request = Request(Options.from_json(header), image=image)
    elif workload.lstrip()[:1] == b"{":  # no image format starts with "{"
        request = _parse_json_request(workload, limits)
    else:
        request = Request(Options(), image=workload)
    if request.image is not None and len(request.image) > limits.max_upload_bytes:
        raise ImageError(f"upload of {len(request.image)} bytes is over the limit of {limits.max_upload_bytes} bytes")
    return request


def _parse_json_request(workload: bytes, limits: Limits) -> Request:
    try:
        obj = json.loads(workload)
    except ValueError as e:
        raise ImageError(f"workload starts with '{{' but is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ImageError("a JSON workload must be an object")
    options = Options.from_json({k: v for k, v in obj.items() if k not in _FILE_KEYS | {"image_b64"}})
    if "image_b64" in obj:
        if _FILE_KEYS & set(obj):
            raise ImageError("give either image_b64 or source/output_dir, not both")
        try:
            image = base64.b64decode(obj["image_b64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as e:
            raise ImageError(f"image_b64 is not valid base64: {e}") from e
        return Request(options, image=image)
    for key in ("source", "output_dir"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise ImageError(f"file mode needs {key!r} (a path string); or send image bytes")
    name = obj.get("name")
    if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[\w][\w.-]{0,200}", name)):
        raise ImageError(f"name must be a plain file name stem (letters, digits, _ . -), got {name!r}")
    return Request(options, source=obj["source"], output_dir=obj["output_dir"], name=name)


def _split_header(data: bytes, magic: bytes, what: str) -> tuple[dict[str, Any], bytes]:
    end = data.find(b"\n", len(magic), len(magic) + _MAX_HEADER)
    if end < 0:
        raise ImageError(f"{what} has no JSON header line after {magic[:-1].decode()}")
    try:
        header = json.loads(data[len(magic):end])
    except ValueError as e:
        raise ImageError(f"{what} header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise ImageError(f"{what} header must be a JSON object")
    return header, data[end + 1:]


def pack_result(result: Result) -> bytes:
    """Bytes-mode result: a JSON header line describing the copies, then their bytes."""
    entries, offset = [], 0
    for c in result.copies:
        entries.append({"size": c.size, "width": c.width, "height": c.height, "format": c.format,
                        "offset": offset, "length": len(c.data)})
        offset += len(c.data)
    s = result.source
    header = {"source": {"format": s.format, "width": s.width, "height": s.height}, "copies": entries}
    return RESULT_MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(
        c.data for c in result.copies)


def unpack_result(result: bytes) -> list[Copy]:
    """The copies in a bytes-mode ``resize`` result, largest first."""
    if not result.startswith(RESULT_MAGIC):
        raise ImageError("not a resize result (no GWRES1 header)")
    header, body = _split_header(result, RESULT_MAGIC, "result")
    copies = []
    try:
        for e in header["copies"]:
            start, length = int(e["offset"]), int(e["length"])
            if start < 0 or length < 0 or start + length > len(body):
                raise ImageError(f"result is truncated: copy {e['size']} needs bytes {start}..{start + length}")
            copies.append(Copy(int(e["size"]), int(e["width"]), int(e["height"]), str(e["format"]),
                               body[start:start + length]))
    except (KeyError, TypeError, ValueError) as e:
        raise ImageError(f"malformed result header: {e!r}") from e
    return copies


# --- the fast path (libvips) --------------------------------------------------------------------------------------


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
        raise ImageError(f"unsupported image format ({loader.removesuffix('_buffer') or 'unknown'}); "
                         f"accepted: JPEG, PNG, WebP, GIF, TIFF")
    width, height = header.width, header.height
    if width * height > limits.max_image_pixels:
        raise ImageError(f"image of {width}x{height} = {width * height} pixels is over the limit of "
                         f"{limits.max_image_pixels} pixels (max_image_pixels)")
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


def resize(data: bytes, options: Options, limits: Limits, progress: Progress | None = None) -> Result:
    """Make every copy ``options`` asks for from image bytes; ``progress(i, n)`` after each one."""
    pyvips = _vips()
    source = probe(data, limits)
    steps = plan(source.width, source.height, options.sizes)
    result = Result(source)
    image = None
    for i, (size, width, height) in enumerate(steps, 1):
        try:
            if image is None:
                # Shrink-on-load, EXIF orientation applied; fail_on only works in option_string (see NOTES).
                image = pyvips.Image.thumbnail_buffer(data, width, height=height, size="force",
                                                      option_string=f"fail_on={_FAIL_ON.get(source.format, 'error')}")
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


# --- file mode ----------------------------------------------------------------------------------------------------


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


def write_copies(result: Result, output_dir: str, name: str, limits: Limits) -> list[dict[str, Any]]:
    """Write each copy as ``<name>-<size>.<ext>`` atomically (a reader never sees half a file)."""
    folder = inside_roots(output_dir, limits.storage_roots, what="output_dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ImageError(f"cannot create output_dir {output_dir!r}: {e.strerror}") from e
    folder = inside_roots(str(folder), limits.storage_roots, what="output_dir")  # mkdir raced a symlink in?
    written = []
    for c in result.copies:
        target = folder / f"{name}-{c.size}.{FORMATS[c.format]}"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(c.data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)  # replaces a symlink at target, never writes through it
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append({"size": c.size, "width": c.width, "height": c.height, "format": c.format,
                        "path": str(target), "bytes": len(c.data)})
    return written


# --- one job ------------------------------------------------------------------------------------------------------


def run(workload: bytes, limits: Limits, progress: Progress | None = None) -> bytes:
    """Handle one ``resize`` workload and return the result bytes (raises :class:`ImageError`)."""
    request = parse_request(workload, limits)
    if request.image is not None:
        return pack_result(resize(request.image, request.options, limits, progress))
    assert request.source is not None and request.output_dir is not None
    data = read_source(request.source, limits)
    result = resize(data, request.options, limits, progress)
    name = request.name or re.sub(r"[^\w.-]", "_", Path(request.source).stem) or "image"
    files = write_copies(result, request.output_dir, name, limits)
    s = result.source
    answer = {"source": {"path": request.source, "format": s.format, "width": s.width, "height": s.height},
              "copies": files}
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"  # a line of its own in the gearman CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m gearworker.imaging pack IMAGE [SIZES [FORMAT [QUALITY]]]`` or ``unpack RESULT DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) >= 2 and args[0] == "pack":
        sizes = [int(s) for s in args[2].split(",")] if len(args) > 2 else None
        fmt = args[3] if len(args) > 3 else "jpeg"
        quality = int(args[4]) if len(args) > 4 else 85
        sys.stdout.buffer.write(pack_request(Path(args[1]).read_bytes(), sizes=sizes, format=fmt, quality=quality))
        return 0
    if len(args) == 3 and args[0] == "unpack":
        out = Path(args[2])
        out.mkdir(parents=True, exist_ok=True)
        for c in unpack_result(Path(args[1]).read_bytes()):
            path = out / f"{c.size}.{FORMATS.get(c.format, c.format)}"
            path.write_bytes(c.data)
            print(f"{path}\t{c.width}x{c.height}\t{c.format}\t{len(c.data)} bytes")
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
