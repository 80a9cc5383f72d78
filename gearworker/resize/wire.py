"""The ``resize`` job's wire formats: the request (``GWIMG1``) and the result (``GWRES1``).

Pure bytes and JSON, no libvips: a client packs a request and unpacks a
result with only this module, and a worker parses the workload here before it
decodes anything.  A workload is one of

* raw image bytes (JPEG, PNG, WebP, GIF, TIFF): default options;
* ``GWIMG1\\n<JSON options>\\n<image bytes>`` (what :func:`pack_request` makes);
* a JSON object: ``{"image_b64": ...}`` plus options, or file mode
  ``{"source": PATH, "output_dir": PATH}`` plus options.

A bytes-mode result is ``GWRES1\\n<JSON header>\\n<copies, concatenated>``; the
header gives each copy's size, dimensions, format, offset and length.
``docs/resize.md`` has the details.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from .types import Copy, ImageError, Limits, Options, Resized

__all__ = [
    "REQUEST_MAGIC",
    "RESULT_MAGIC",
    "Request",
    "pack_request",
    "pack_result",
    "parse_request",
    "unpack_result",
]

REQUEST_MAGIC = b"GWIMG1\n"
RESULT_MAGIC = b"GWRES1\n"
_MAX_HEADER = 64 * 1024  # a JSON header line longer than this is not ours
_FILE_KEYS = {"source", "output_dir", "name"}


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed workload: bytes mode sets ``image``, file mode ``source`` and ``output_dir``."""

    options: Options
    image: bytes | None = None
    source: str | None = None
    output_dir: str | None = None
    name: str | None = None


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
        request = _parse_json_request(workload)
    else:
        request = Request(Options(), image=workload)
    if request.image is not None and len(request.image) > limits.max_upload_bytes:
        raise ImageError(f"upload of {len(request.image)} bytes is over the limit of {limits.max_upload_bytes} bytes")
    return request


def _parse_json_request(workload: bytes) -> Request:
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
        header = json.loads(data[len(magic) : end])
    except ValueError as e:
        raise ImageError(f"{what} header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise ImageError(f"{what} header must be a JSON object")
    return header, data[end + 1 :]


def pack_result(result: Resized) -> bytes:
    """Bytes-mode result: a JSON header line describing the copies, then their bytes."""
    entries, offset = [], 0
    for c in result.copies:
        entries.append(
            {
                "size": c.size,
                "width": c.width,
                "height": c.height,
                "format": c.format,
                "offset": offset,
                "length": len(c.data),
            }
        )
        offset += len(c.data)
    s = result.source
    header = {"source": {"format": s.format, "width": s.width, "height": s.height}, "copies": entries}
    return (
        RESULT_MAGIC
        + json.dumps(header, separators=(",", ":")).encode()
        + b"\n"
        + b"".join(c.data for c in result.copies)
    )


def unpack_result(result: bytes) -> list[Copy]:
    """The copies in a bytes-mode ``resize`` result, largest first; bytes after the last copy are ignored."""
    if not result.startswith(RESULT_MAGIC):
        raise ImageError("not a resize result (no GWRES1 header)")
    header, body = _split_header(result, RESULT_MAGIC, "result")
    copies = []
    try:
        for e in header["copies"]:
            start, length = int(e["offset"]), int(e["length"])
            if start < 0 or length < 0 or start + length > len(body):
                raise ImageError(f"result is truncated: copy {e['size']} needs bytes {start}..{start + length}")
            copies.append(
                Copy(int(e["size"]), int(e["width"]), int(e["height"]), str(e["format"]), body[start : start + length])
            )
    except (KeyError, TypeError, ValueError) as e:
        raise ImageError(f"malformed result header: {e!r}") from e
    return copies
