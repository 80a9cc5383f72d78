"""Soak: many small jobs through one worker process; memory and file descriptors must stay flat.

RSS and open fds of the worker are sampled every second (psutil).  After a
warm-up (the first quarter of the jobs: allocator pools, caches and the
pool's processes settle), RSS may grow less than 5 MiB and the fd count at
rest must be what it was after warm-up.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from gearmand import Gearmand
from support import WorkerProcess

from gearworker import Client

from .conftest import Size
from .harness import HANDLERS, Sampler, env_for, mib, record_figures, runs

MIB = 1024 * 1024
MAX_GROWTH = 5 * MIB


async def _drive(
    client: Client,
    function: str,
    total: int,
    in_flight: int,
    progress: list[int],
    warm: asyncio.Event,
    unique: str | None = None,
) -> None:
    """Run ``total`` foreground jobs, ``in_flight`` at a time; set ``warm`` after the first quarter."""
    issued = 0

    async def lane() -> None:
        nonlocal issued
        while issued < total:
            n = issued
            issued += 1
            # echo gets 64 distinct bytes back; rec_cpu reads its workload as milliseconds to sleep
            payload = b"0" if unique else f"{n:08d}".encode() * 8
            result = await client.submit(function, payload, unique=f"{unique}-{n}" if unique else None, timeout=60)
            assert result in (payload, b"ok")
            progress[0] += 1
            if progress[0] == total // 4:
                warm.set()

    await asyncio.gather(*(lane() for _ in range(in_flight)))


async def _at_rest(sampler: Sampler, timeout: float = 30.0) -> dict[str, float]:
    """A sample once the worker's fds and processes stopped changing (two samples 0.3 s apart agree)."""
    deadline = time.monotonic() + timeout
    last = sampler.sample()
    while True:
        await asyncio.sleep(0.3)
        now = sampler.sample()
        if (now["fds"], now["children"]) == (last["fds"], last["children"]):
            return now
        assert time.monotonic() < deadline, f"the worker never came to rest: {last} then {now}"
        last = now


def _after(samples: list[dict[str, float]], t: float) -> list[dict[str, float]]:
    return [s for s in samples if s["t"] >= t]


@pytest.mark.timeout(900)
async def test_soak_async_jobs_memory_and_fds_stay_flat(size: Size, gearmand: Gearmand, results_db: Path) -> None:
    """Hundreds of thousands of async jobs through one worker: RSS growth after warm-up < 5 MiB, fds constant."""
    # Info level, as in production: every job also goes through structlog (a job.done line).
    w = WorkerProcess([gearmand.address], handlers=HANDLERS, args=["--processes", "1"], env=env_for(results_db))
    w.start(wait_for="echo", gearmand=gearmand)
    try:
        sampler = Sampler(w.pid).start()
        warm = asyncio.Event()
        started = time.monotonic()
        async with Client([gearmand.address]) as client:
            drive = asyncio.create_task(_drive(client, "echo", size.soak_jobs, 200, sampler.progress, warm))
            await warm.wait()
            warm_at = sampler.sample()
            await drive
        duration = time.monotonic() - started
        await asyncio.sleep(1.0)  # let the worker go idle
        sampler.stop()
    finally:
        assert w.stop(30) == 0
    post = _after(sampler.samples, warm_at["t"])
    end = sampler.samples[-1]
    growth = end["rss"] - warm_at["rss"]
    peak_growth = max(s["rss"] for s in post) - warm_at["rss"]
    record_figures(
        "soak_async",
        size=size.label,
        jobs=size.soak_jobs,
        duration_s=round(duration, 1),
        jobs_per_s=round(size.soak_jobs / duration),
        samples=len(sampler.samples),
        rss_start_mib=mib(sampler.samples[0]["rss"]),
        rss_after_warmup_mib=mib(warm_at["rss"]),
        rss_end_mib=mib(end["rss"]),
        rss_growth_mib=mib(growth),
        rss_peak_growth_mib=mib(peak_growth),
        fds_after_warmup=warm_at["fds"],
        fds_end=end["fds"],
        fds_seen=sorted({s["fds"] for s in post}),
    )
    assert growth < MAX_GROWTH and peak_growth < MAX_GROWTH
    assert end["fds"] == warm_at["fds"]
    assert {s["fds"] for s in post} == {warm_at["fds"]}


@pytest.mark.timeout(900)
async def test_soak_cpu_jobs_with_recycled_pool_processes_memory_and_fds_stay_flat(
    size: Size, gearmand: Gearmand, results_db: Path
) -> None:
    """CPU jobs with max_tasks_per_child recycling the pool: the worker's RSS growth < 5 MiB, its fds and
    process count at rest unchanged, and every job ran once."""
    per_child = 10
    w = WorkerProcess(
        [gearmand.address],
        handlers=HANDLERS,
        env=env_for(results_db),
        args=["--processes", "2", "--max-tasks-per-child", str(per_child)],
    )
    w.start(wait_for="rec_cpu", gearmand=gearmand)
    try:
        sampler = Sampler(w.pid).start()
        warm_up = size.soak_cpu_jobs // 4
        started = time.monotonic()
        async with Client([gearmand.address]) as client:
            # The baseline is taken at rest after a warm-up, not in the middle of the load, where a
            # pool process being replaced (every few ms here) may or may not be counted.
            await _drive(client, "rec_cpu", warm_up, 4, sampler.progress, asyncio.Event(), unique="soak-a")
            warm_at = await _at_rest(sampler)
            await _drive(
                client, "rec_cpu", size.soak_cpu_jobs - warm_up, 4, sampler.progress, asyncio.Event(), unique="soak-b"
            )
        duration = time.monotonic() - started
        end = await _at_rest(sampler)
        sampler.stop()
    finally:
        assert w.stop(30) == 0
    seen = runs(results_db)
    pool_pids = _pids(results_db)
    growth = end["rss"] - warm_at["rss"]
    record_figures(
        "soak_cpu",
        size=size.label,
        jobs=size.soak_cpu_jobs,
        max_tasks_per_child=per_child,
        pool_processes_used=len(pool_pids),
        duration_s=round(duration, 1),
        rss_after_warmup_mib=mib(warm_at["rss"]),
        rss_end_mib=mib(end["rss"]),
        rss_growth_mib=mib(growth),
        children_rss_end_mib=mib(end["rss_children"]),
        fds_after_warmup=warm_at["fds"],
        fds_end=end["fds"],
        children_after_warmup=warm_at["children"],
        children_end=end["children"],
        ran_once=sum(1 for c in seen.values() if c == 1),
        duplicates=sum(c - 1 for c in seen.values()),
    )
    assert len(seen) == size.soak_cpu_jobs and all(c == 1 for c in seen.values())
    assert len(pool_pids) >= size.soak_cpu_jobs // per_child  # the pool really recycled its processes
    assert growth < MAX_GROWTH
    assert end["fds"] == warm_at["fds"]
    assert end["children"] == warm_at["children"]


def _pids(db: Path) -> set[int]:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return {pid for (pid,) in con.execute("SELECT DISTINCT pid FROM runs")}
    finally:
        con.close()
