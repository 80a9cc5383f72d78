"""Handlers for the job-queue tests (retries, NoRetry, timeouts, cpu=True retries).

Attempts are counted in files under $GW_TEST_STATE, one per job handle, so
that attempts made in different pool processes are counted together.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from gearworker import CpuJob, Job, NoRetry, handler


def _attempt(job: Job | CpuJob) -> int:
    """This attempt's number (1, 2, ...) for this job."""
    state = Path(os.environ["GW_TEST_STATE"])
    counter = state / ("attempts-" + job.handle.decode().replace(":", "_").replace("/", "_"))
    with counter.open("a") as f:
        f.write("x")
    return counter.stat().st_size


@handler("flaky", retries=2, retry_backoff=0.05)
async def flaky(job: Job) -> str:
    """Fails the first N attempts (N = the workload, default 2), then succeeds."""
    n = _attempt(job)
    if n <= int(job.workload or b"2"):
        raise RuntimeError(f"flaky failure {n}")
    return f"ok after {n} attempts"


@handler("flaky_cpu", cpu=True, retries=2, retry_backoff=0.05)
def flaky_cpu(job: CpuJob) -> str:
    """The same, in the process pool."""
    n = _attempt(job)
    if n <= int(job.workload or b"2"):
        raise ValueError(f"cpu flaky failure {n} in {os.getpid()}")
    return f"cpu ok after {n} attempts"


@handler("never_works", retries=1, retry_backoff=0.05)
async def never_works(job: Job) -> str:
    n = _attempt(job)
    raise RuntimeError(f"broken for good (attempt {n})")


@handler("refuses", retries=3, retry_backoff=0.05)
async def refuses(job: Job) -> str:
    _attempt(job)
    raise NoRetry("workload is not valid")


# 2 s: the second attempt of the cpu one runs in a fresh pool process (the first
# one's was killed), whose start-up counts against the timeout on a busy machine.
@handler("slow_first", timeout=2, retries=1, retry_backoff=0.05)
async def slow_first(job: Job) -> str:
    """Times out on the first attempt, answers on the second."""
    if _attempt(job) == 1:
        await asyncio.sleep(30)
    return "second attempt in time"


@handler("cpu_slow_first", cpu=True, timeout=2, retries=1, retry_backoff=0.05)
def cpu_slow_first(job: CpuJob) -> str:
    if _attempt(job) == 1:
        time.sleep(30)
    return "cpu second attempt in time"


_HOARD: list[bytes] = []


@handler("cpu_pid_rss", cpu=True)
def cpu_pid_rss(job: CpuJob) -> str:
    """``pid rss_mib`` of the pool process; workload "hoard N" first keeps N MiB alive in it."""
    words = job.workload.split()
    if words[:1] == [b"hoard"]:
        _HOARD.append(b"x" * (int(words[1]) * 1024 * 1024))  # written, so resident
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
    return f"{os.getpid()} {rss}"
