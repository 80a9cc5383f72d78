"""Shutdown under load: SIGTERM at a random moment, again and again.

Each cycle starts a worker, loads it with a mix of async and CPU background
jobs, and sends SIGTERM at a random moment.  Every cycle must exit with code 0
within the grace period and leave no process behind; jobs it did not take, or
handed back, are taken by a later cycle.  Every job shorter than the grace
period finishes where it started, so nothing runs twice.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import pytest
from gearmand import Gearmand
from support import WorkerProcess

from gearworker import Client

from .conftest import Size
from .harness import (
    HANDLERS,
    ProcessWatch,
    env_for,
    record_figures,
    runs,
    seed_from_env,
    submit_background,
    wait_for_runs,
)

GRACE = 5.0
SLACK = 3.0  # closing the pool and its forkserver after the last job


def _load(rng: random.Random, cycle: int, n: int) -> list[tuple[str, bytes, str]]:
    jobs = []
    for i in range(n):
        if rng.random() < 0.4:
            jobs.append(("rec_cpu", str(rng.randint(50, 800)).encode(), f"c{cycle}-{i}"))
        else:
            jobs.append(("rec", str(rng.randint(50, 1500)).encode(), f"c{cycle}-{i}"))
    return jobs


@pytest.mark.timeout(900)
async def test_sigterm_under_load_exits_cleanly_and_every_job_completes(
    size: Size, gearmand: Gearmand, results_db: Path
) -> None:
    """Each SIGTERM under load: exit code 0 within the grace period, no orphan; in the end every job ran once."""
    seed = seed_from_env()
    rng = random.Random(seed)
    expected: set[str] = set()
    exits: list[float] = []
    running_at_term: list[int] = []
    leftovers: list[str] = []
    handed_back = 0
    started = time.monotonic()
    async with Client([gearmand.address]) as client:
        for cycle in range(size.shutdown_cycles):
            jobs = _load(rng, cycle, 40)
            expected |= {u for _, _, u in jobs}
            await submit_background(client, jobs)
            watch = ProcessWatch()
            w = WorkerProcess(
                [gearmand.address],
                handlers=HANDLERS,
                env=env_for(results_db),
                args=["--processes", "2", "--concurrency", "20", "--grace-period", str(GRACE)],
            )
            w.start()
            watch.watch(w.pid)
            await asyncio.to_thread(w.wait_registered, gearmand, "rec_cpu")
            await asyncio.sleep(rng.uniform(0.1, 2.0))
            watch.poll()
            running_at_term.append(
                gearmand.status().get("rec", (0, 0, 0))[1] + gearmand.status().get("rec_cpu", (0, 0, 0))[1]
            )
            t0 = time.monotonic()
            w.signal(signal.SIGTERM)
            code = await asyncio.to_thread(w.wait, GRACE + 30)
            exits.append(time.monotonic() - t0)
            assert code == 0, w.log_text()[-2000:]
            leftovers += watch.leftovers()
            handed_back += sum(e.get("count", 0) for e in w.log_records("server.jobs_handed_back"))
        # What the cycles did not finish is still queued: one last worker drains it.
        last = WorkerProcess(
            [gearmand.address],
            handlers=HANDLERS,
            env=env_for(results_db),
            args=["--processes", "2", "--concurrency", "20"],
        ).start()
        try:
            seen = await asyncio.to_thread(wait_for_runs, results_db, expected, timeout=120.0)
        finally:
            assert last.stop(30) == 0
    missing = expected - set(seen)
    duplicates = sum(c - 1 for u, c in seen.items() if u in expected)
    restarted = sum(1 for u, c in runs(results_db, "starts").items() if u in expected and c > 1)
    record_figures(
        "shutdown",
        size=size.label,
        seed=seed,
        cycles=size.shutdown_cycles,
        jobs=len(expected),
        completed=len(expected) - len(missing),
        missing=len(missing),
        duplicates=duplicates,
        started_twice=restarted,
        handed_back_after_grace=handed_back,
        grace_s=GRACE,
        max_exit_s=round(max(exits), 2),
        mean_exit_s=round(sum(exits) / len(exits), 2),
        jobs_running_at_sigterm=sum(running_at_term),
        leftover_processes=len(leftovers),
        duration_s=round(time.monotonic() - started, 1),
    )
    assert max(exits) <= GRACE + SLACK, exits
    assert not leftovers, leftovers
    assert not missing, sorted(missing)[:20]
    # Every job is shorter than the grace period: none may have been handed back and run twice.
    assert duplicates == 0 and restarted == 0 and handed_back == 0
