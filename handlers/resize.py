"""The ``resize`` handler: photo copies at several sizes, made in the process pool.

Send image bytes (JPEG, PNG, WebP, GIF, TIFF) and get every copy back in one
result, or send a JSON job naming files on shared storage::

    gearman -f resize < photo.jpg > result.bin
    python -m gearworker.resize unpack result.bin copies/

    gearman -f resize '{"source": "/srv/photos/in/a.jpg", "output_dir": "/srv/photos/out"}'

``docs/resize.md`` documents the formats; :mod:`gearworker.resize` does the work.
"""

from __future__ import annotations

import functools
import time

import structlog

from gearworker import CpuJob, config, handler
from gearworker.resize import Limits, run

log = structlog.get_logger("gearworker.handlers.resize")


@functools.cache
def limits() -> Limits:
    """The limits from the settings, read once per pool process."""
    s = config.active()
    return Limits(
        max_upload_bytes=s.max_upload_bytes, max_image_pixels=s.max_image_pixels, storage_roots=tuple(s.storage_roots)
    )


@handler("resize", cpu=True, timeout=120)
def resize(job: CpuJob) -> bytes:
    """Resize a photo to several sizes; WORK_STATUS after each copy; bad input fails the job with a clear message."""
    start = time.perf_counter()
    result = run(job.workload, limits(), progress=job.status)
    log.info(
        "resize.done",
        handle=job.handle.decode(errors="replace"),
        unique=job.unique.decode(errors="replace"),
        input_bytes=len(job.workload),
        output_bytes=len(result),
        duration=round(time.perf_counter() - start, 4),
    )
    return result
