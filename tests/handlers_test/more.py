"""More handlers for the shutdown, crash and aiogear-case tests.

Unlike ``faults.py`` these have no timeout, so a test decides when a job ends
(it kills the child, signals the worker, or lets the sleep run out).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from gearworker import CpuJob, Job, handler


def _long_job(workload: bytes) -> tuple[float, Path | None]:
    """``{"seconds": S, "pidfile": P, "once": M}``; returns the sleep to do.

    ``pidfile`` gets the running pid (so a test can kill exactly that child).
    ``once`` is a marker file: the first run creates it and sleeps ``seconds``;
    a re-run (the job re-queued after a shutdown) finds it and returns at once.
    """
    spec = json.loads(workload)
    if spec.get("pidfile"):
        Path(spec["pidfile"]).write_text(str(os.getpid()))
    seconds = float(spec.get("seconds", 60))
    once = spec.get("once")
    if once:
        marker = Path(once)
        if marker.exists():
            return 0.0, marker
        marker.write_text(str(os.getpid()))
    return seconds, None


@handler("cpu_long", cpu=True)
def cpu_long(job: CpuJob) -> str:
    """Sleep in a pool process; return ``"<first|rerun> <pid>"``."""
    seconds, rerun = _long_job(job.workload)
    time.sleep(seconds)
    return f"{'rerun' if rerun else 'first'} {os.getpid()}"


@handler("async_long")
async def async_long(job: Job) -> str:
    """Sleep on the event loop; return ``"<first|rerun> <pid>"``."""
    seconds, rerun = _long_job(job.workload)
    await asyncio.sleep(seconds)
    return f"{'rerun' if rerun else 'first'} {os.getpid()}"


@handler("sleep_echo")
async def sleep_echo(job: Job) -> bytes:
    """Workload ``b"<seconds>|<anything>"``: sleep, then return the whole workload unchanged."""
    delay, _, _ = job.workload.partition(b"|")
    await asyncio.sleep(float(delay))
    return job.workload


@handler("cpu_sleep_echo", cpu=True)
def cpu_sleep_echo(job: CpuJob) -> bytes:
    """Like ``sleep_echo`` but in a pool process."""
    delay, _, _ = job.workload.partition(b"|")
    time.sleep(float(delay))
    return job.workload


@handler("async_timeout_marker", timeout=1)
async def async_timeout_marker(job: Job) -> str:
    """``{"seconds": S, "marker": P}``: write P after sleeping; with S past the 1 s timeout it must never be written."""
    spec = json.loads(job.workload)
    await asyncio.sleep(float(spec["seconds"]))
    Path(spec["marker"]).write_text("not cancelled")
    return "finished"
