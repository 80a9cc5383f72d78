"""Handlers for the failure-path scenarios (tests/reliability/test_failure_path.py).

``always_fails`` fails every attempt (its failures are what the failed-job
store must keep); ``echo`` answers at once; ``retry_later`` fails its first
attempt and then waits out a long retry backoff, the wait a shutdown must
not sit through.
"""

from __future__ import annotations

import os

from gearworker import Job, handler


@handler("always_fails")
async def always_fails(job: Job) -> bytes:
    raise RuntimeError(f"always fails: {job.unique.decode()}")


@handler("echo")
async def echo(job: Job) -> bytes:
    return job.workload


@handler("retry_later", retries=1, retry_backoff=float(os.environ.get("GW_RETRY_BACKOFF", "60")))
async def retry_later(job: Job) -> bytes:
    marker = os.environ.get("GW_RETRY_MARKER")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails; the retry waits")
    return b"retried"
