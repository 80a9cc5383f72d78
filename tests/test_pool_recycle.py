"""Pool processes are recycled after N jobs or above an RSS limit, per process, without deadlock under load.

CPython gh-115634: ProcessPoolExecutor's own max_tasks_per_child can deadlock,
so the pool recycles with one executor per slot; these tests run it under load.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from gearmand import Gearmand
from support import WorkerProcess, wait_until

from gearworker import Client

HANDLERS = Path(__file__).resolve().parent / "handlers_jobqueue"


def recycled(w: WorkerProcess, reason: str) -> bool:
    """The worker logged pool.recycled for ``reason``."""
    return any(r.get("reason") == reason for r in w.log_records("pool.recycled"))


async def test_max_tasks_per_child_recycles_each_process_under_load(gearmand: Gearmand, tmp_path: Path) -> None:
    """30 CPU jobs at once on 2 processes with --max-tasks-per-child 3: all answer, no process runs more than 3."""
    w = WorkerProcess(
        [gearmand.address],
        handlers=HANDLERS,
        args=["--processes", "2", "--max-tasks-per-child", "3"],
        env={"GW_TEST_STATE": str(tmp_path)},
    )
    w.start(wait_for="cpu_pid_rss", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            results = await asyncio.gather(*(client.submit("cpu_pid_rss", timeout=120) for _ in range(30)))
        per_pid = Counter(r.split()[0] for r in results)
        assert sum(per_pid.values()) == 30
        assert max(per_pid.values()) <= 3
        assert len(per_pid) >= 10
    finally:
        assert w.stop() == 0
    # After the stop: every line is written by then (lines are batched for up to logs.LINGER).
    assert "pool.restarted" not in w.log_text()  # recycled cleanly, never killed


async def test_a_process_above_max_child_rss_is_replaced_after_its_job(gearmand: Gearmand, tmp_path: Path) -> None:
    """MAX_CHILD_RSS=150: small jobs keep their process; one that leaves 200 MiB behind gets it replaced."""
    w = WorkerProcess(
        [gearmand.address],
        handlers=HANDLERS,
        args=["--processes", "1"],
        env={"GW_TEST_STATE": str(tmp_path), "GEARWORKER_MAX_CHILD_RSS": "150"},
    )
    w.start(wait_for="cpu_pid_rss", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            small = [(await client.submit("cpu_pid_rss", timeout=60)).split() for _ in range(3)]
            assert len({pid for pid, _ in small}) == 1 and all(int(rss) < 150 for _, rss in small)
            hoarder = (await client.submit("cpu_pid_rss", "hoard 200", timeout=60)).split()
            assert hoarder[0] == small[0][0] and int(hoarder[1]) > 150
            after = (await client.submit("cpu_pid_rss", timeout=60)).split()
        assert after[0] != hoarder[0] and int(after[1]) < 150
        wait_until(  # log lines are written in batches
            lambda: recycled(w, "max_child_rss"), 10, what="the recycle logged", detail=lambda: w.log_text()[-3000:]
        )
    finally:
        assert w.stop() == 0
