"""Resizing photos: the ``resize`` job's wire formats, its libvips fast path and file mode.

An application built on gearworker, not part of it: the core (worker, client,
protocol) never imports this package.

Client side (no libvips needed)::

    from gearworker.resize import pack_request, unpack_result
    workload = pack_request(photo_bytes, sizes=[1024, 256], format="webp")
    for copy in unpack_result(result):      # largest first
        print(copy.size, copy.width, copy.height, copy.format, len(copy.data))

Worker side, :func:`run` turns a workload into a result (``handlers/resize.py``
calls it in the process pool).  The pieces:

* :mod:`.types`: options, limits, :class:`Copy`, :class:`ImageError`;
* :mod:`.wire`: the request (``GWIMG1``) and result (``GWRES1``) formats;
* :mod:`.engine`: libvips, imported on first use only, so the web app and the
  worker's parent process never load it (a forked child of a process that ran
  libvips can hang);
* :mod:`.files`: file mode, reading and writing only inside ``storage_roots``;
* :mod:`.job`: :func:`run`, one job from workload to result;
* :mod:`.cli`: ``python -m gearworker.resize pack|unpack``.

``docs/resize.md`` documents the formats.
"""

from .engine import plan, probe, resize
from .job import run
from .types import DEFAULT_SIZES, FORMATS, Copy, ImageError, Limits, OnProgress, Options, Resized, Source
from .wire import REQUEST_MAGIC, RESULT_MAGIC, Request, pack_request, pack_result, parse_request, unpack_result

__all__ = [
    "DEFAULT_SIZES",
    "FORMATS",
    "REQUEST_MAGIC",
    "RESULT_MAGIC",
    "Copy",
    "ImageError",
    "Limits",
    "OnProgress",
    "Options",
    "Request",
    "Resized",
    "Source",
    "pack_request",
    "pack_result",
    "parse_request",
    "plan",
    "probe",
    "resize",
    "run",
    "unpack_result",
]
