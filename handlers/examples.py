"""Example handlers: the smallest useful ones, and the ones the tests use.

Try them with the ``gearman`` CLI from gearman-tools::

    gearman -f echo "hello"          # hello
    gearman -f reverse "hello"       # olleh
    gearman -f slow 3                # progress 1/3, 2/3, 3/3, then "slept 3s"
"""

from __future__ import annotations

import asyncio
import time

from gearworker import CpuJob, Job, handler


@handler("echo", aliases=["echo_alias"])
async def echo(job: Job) -> bytes:
    """Return the workload unchanged (bytes in, the same bytes out)."""
    return job.workload


@handler("reverse")
async def reverse(job: Job) -> bytes:
    """Return the workload's bytes in reverse order."""
    return job.workload[::-1]


@handler("fail")
async def fail(job: Job) -> bytes:
    """Always fail: the client sees a failed job with this message."""
    raise RuntimeError(f"fail was asked to fail ({len(job.workload)} bytes)")


def _seconds(job: Job | CpuJob) -> int:
    text = job.workload.strip() or b"1"
    return max(0, min(3600, int(float(text))))


@handler("slow")
async def slow(job: Job) -> str:
    """Sleep the number of seconds in the workload, reporting progress each second."""
    seconds = _seconds(job)
    for done in range(1, seconds + 1):
        await asyncio.sleep(1)
        await job.status(done, seconds)
    return f"slept {seconds}s"


@handler("slow_cpu", cpu=True)
def slow_cpu(job: CpuJob) -> str:
    """Like ``slow``, but blocking code in the process pool; progress comes from the child."""
    seconds = _seconds(job)
    for done in range(1, seconds + 1):
        time.sleep(1)
        job.status(done, seconds)
    return f"slept {seconds}s in a pool process"
