"""The benchmark's handlers: the same two functions as bench/php/worker.php."""

from __future__ import annotations

import asyncio

from gearworker import Job, handler


@handler("echo")
async def echo(job: Job) -> bytes:
    """Return the workload unchanged."""
    return job.workload


@handler("noop")
async def noop(job: Job) -> None:
    """Return nothing: the cheapest job there is (for latency)."""
    return None


@handler("sleep")
async def sleep(job: Job) -> None:
    """Sleep the number of seconds in the workload (a float): holds a job in flight for the memory case."""
    await asyncio.sleep(float(job.workload))
