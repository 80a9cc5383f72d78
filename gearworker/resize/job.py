"""One ``resize`` job, from workload to result bytes: what the worker's handler calls.

Parses the workload (:mod:`.wire`), resizes with libvips (:mod:`.engine`) and,
in file mode, reads and writes inside the storage roots (:mod:`.files`).
"""

from __future__ import annotations

import json

from .engine import resize
from .files import default_name, read_source, write_copies
from .types import Limits, OnProgress
from .wire import pack_result, parse_request

__all__ = ["run"]


def run(workload: bytes, limits: Limits, progress: OnProgress | None = None) -> bytes:
    """Handle one ``resize`` workload and return the result bytes (raises :class:`~.types.ImageError`).

    Bytes mode answers with a ``GWRES1`` result; file mode writes the copies and
    answers with one JSON line naming the files.
    """
    request = parse_request(workload, limits)
    if request.image is not None:
        return pack_result(resize(request.image, request.options, limits, progress))
    assert request.source is not None and request.output_dir is not None
    data = read_source(request.source, limits)
    result = resize(data, request.options, limits, progress)
    files = write_copies(result, request.output_dir, request.name or default_name(request.source), limits)
    s = result.source
    answer = {
        "source": {"path": request.source, "format": s.format, "width": s.width, "height": s.height},
        "copies": files,
    }
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"  # a line of its own in the gearman CLI
