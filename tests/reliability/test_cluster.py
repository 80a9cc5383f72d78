"""Cluster: three gearmand servers; any one may stop and come back.

While one is down, jobs keep flowing through the other two, for the client
(it fails over) and the workers (their other connections keep serving).
When it returns, every worker registers with it again within the reconnect
backoff bound (GEARWORKER_RECONNECT_MAX=1) and takes work from it again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from gearmand import Gearmand
from support import MakeGearmand, WorkerProcess

from gearworker import Client

from .harness import HANDLERS, ProcessWatch, env_for, record_figures, runs, submit_background, wait_for_runs

RECONNECT_MAX = 1.0
SLACK = 4.0  # a noisy shared machine: the bound is checked generously
WORKERS = 2


async def _echo_all(client: Client, tag: str, n: int = 60) -> None:
    payloads = [f"{tag}-{i}".encode() for i in range(n)]
    results = await asyncio.gather(*(client.submit("echo", p, unique=p, timeout=30) for p in payloads))
    assert results == payloads


def _registered(g: Gearmand) -> int:
    try:
        return g.status().get("echo", (0, 0, 0))[2]
    except OSError:
        return 0


@pytest.mark.timeout(300)
async def test_stopping_any_one_server_keeps_jobs_flowing_and_workers_come_back(
    gearmand_factory: MakeGearmand, results_db: Path
) -> None:
    """Stop each of three servers in turn: foreground and background jobs still complete through the other two;
    when it restarts, both workers re-register within the backoff bound and run jobs submitted to it."""
    gearmands = [gearmand_factory() for _ in range(3)]
    servers = [g.address for g in gearmands]
    watch = ProcessWatch()
    env = env_for(results_db, GEARWORKER_RECONNECT_MIN="0.05", GEARWORKER_RECONNECT_MAX=str(RECONNECT_MAX))
    workers = [
        WorkerProcess(servers, handlers=HANDLERS, args=["--processes", "1"], env=env).start() for _ in range(WORKERS)
    ]
    for w in workers:
        watch.watch(w.pid)
    for g in gearmands:
        workers[0].wait_registered(g, "echo", workers=WORKERS)
    rejoin: dict[str, float] = {}
    background: set[str] = set()
    try:
        async with Client(servers, reconnect_min=0.05, reconnect_max=RECONNECT_MAX, connect_timeout=2.0) as client:
            await _echo_all(client, "all-up")
            for index, down in enumerate(gearmands):
                # In a thread, so the client sees its connection close (a job sent at the very moment a
                # server dies fails with ConnectionLost: that race is the caller's to retry).
                await asyncio.to_thread(down.stop)
                await asyncio.sleep(0.1)
                await _echo_all(client, f"without-{index}")
                jobs = [("rec", b"1", f"bg-without-{index}-{i}") for i in range(30)]
                await submit_background(client, jobs)
                background |= {u for _, _, u in jobs}
                assert all(w.proc is not None and w.proc.poll() is None for w in workers)
                await asyncio.sleep(2 * RECONNECT_MAX)  # down long enough for the workers' backoff to reach its cap
                t0 = time.monotonic()
                await asyncio.to_thread(down.start)  # same port
                while _registered(down) < WORKERS and time.monotonic() - t0 < 30:
                    await asyncio.sleep(0.02)
                rejoin[f"server{index}"] = round(time.monotonic() - t0, 2)
                assert _registered(down) == WORKERS
                async with Client([down.address]) as direct:
                    await _echo_all(direct, f"back-{index}", 20)
            seen = await asyncio.to_thread(wait_for_runs, results_db, background, timeout=60.0)
    finally:
        codes = [w.stop(30) for w in workers]
    leftovers = watch.leftovers()
    record_figures(
        "cluster",
        servers=3,
        workers=WORKERS,
        reconnect_max_s=RECONNECT_MAX,
        reregistration_s=rejoin,
        background_jobs=len(background),
        background_completed=len(background & set(seen)),
        leftover_processes=len(leftovers),
    )
    assert codes == [0] * WORKERS
    assert background <= set(runs(results_db))
    assert all(t <= RECONNECT_MAX + SLACK for t in rejoin.values()), rejoin
    assert not leftovers, leftovers
