"""Handlers for the network tests: each run is appended to the file in $NET_RECORD (when set)."""

from __future__ import annotations

import asyncio
import os
import time

from gearworker import CpuJob, Job, handler


def _record(job: Job | CpuJob) -> None:
    path = os.environ.get("NET_RECORD")
    if path:
        # One short write per line with O_APPEND: lines from concurrent jobs never interleave.
        with open(path, "a") as f:
            f.write(f"{job.unique.decode() or job.workload.decode()}\t{time.time():.3f}\n")


@handler("net_echo")
async def net_echo(job: Job) -> bytes:
    """Return the workload; record the run."""
    _record(job)
    return job.workload


@handler("net_slow")
async def net_slow(job: Job) -> bytes:
    """Sleep the workload's seconds, then record the run and return the workload."""
    await asyncio.sleep(float(job.workload or b"1"))
    _record(job)
    return job.workload


@handler("net_cpu_sleep", cpu=True)
def net_cpu_sleep(job: CpuJob) -> bytes:
    """In a pool process: write this process's pid to $NET_PIDS, sleep the workload's seconds, record the run."""
    path = os.environ.get("NET_PIDS")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
    time.sleep(float(job.workload or b"1"))
    _record(job)
    return job.workload


@handler("net_hold")
async def net_hold(job: Job) -> bytes:
    """Sleep the workload's seconds, unless $NET_FAST is set (the worker that takes the job over answers at once)."""
    if not os.environ.get("NET_FAST"):
        await asyncio.sleep(float(job.workload or b"1"))
    _record(job)
    return job.workload
