"""Handlers that misbehave on purpose, for the fault tests."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from gearworker import CpuJob, Job, handler


@handler("echo")
async def echo(job: Job) -> bytes:
    return job.workload


@handler("cpu_echo", cpu=True)
def cpu_echo(job: CpuJob) -> bytes:
    return job.workload


@handler("cpu_progress", cpu=True)
def cpu_progress(job: CpuJob) -> str:
    steps = int(job.workload or b"3")
    for i in range(1, steps + 1):
        job.status(i, steps)
    return "done"


@handler("cpu_sleep", cpu=True, timeout=1)
def cpu_sleep(job: CpuJob) -> str:
    """Sleeps the workload's seconds; its 1 s timeout kills the child first when longer."""
    time.sleep(float(job.workload or b"60"))
    return f"pid {os.getpid()}"


@handler("cpu_pid", cpu=True)
def cpu_pid(job: CpuJob) -> str:
    return str(os.getpid())


@handler("cpu_exit", cpu=True)
def cpu_exit(job: CpuJob) -> str:
    os._exit(3)


@handler("cpu_segv", cpu=True)
def cpu_segv(job: CpuJob) -> str:
    os.kill(os.getpid(), signal.SIGSEGV)
    return "unreachable"


@handler("async_sleep", timeout=1)
async def async_sleep(job: Job) -> str:
    await asyncio.sleep(float(job.workload or b"60"))
    return "slept"


@handler("bad_result")
async def bad_result(job: Job) -> object:
    return {1, 2, 3}  # a set is not JSON-serialisable


@handler("raises")
async def raises(job: Job) -> bytes:
    raise ValueError("bad workload: " + job.workload.decode(errors="replace"))
