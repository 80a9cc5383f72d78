"""Faults inside one worker: misbehaving handlers, dying pool processes, shutdown hygiene."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gearmand import Gearmand
from support import WorkerProcess

from gearworker import Client
from gearworker.errors import JobFailed

from .harness import FAULTS, HANDLERS, env_for, pool_children, runs


@pytest.fixture(scope="module")
def fault_server() -> Iterator[Gearmand]:
    g = Gearmand().start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def fault_worker(fault_server: Gearmand) -> Iterator[WorkerProcess]:
    """One worker serving the misbehaving handlers for every case (it must survive them all)."""
    w = WorkerProcess([fault_server.address], handlers=FAULTS, args=["--processes", "2", "--grace-period", "5"])
    w.start(wait_for="cpu_segv", gearmand=fault_server)
    yield w
    assert w.stop(20) == 0


@pytest.mark.parametrize(
    ("function", "workload", "message"),
    [
        ("raises", b"boom", r"ValueError: bad workload: boom"),
        ("bad_result", b"", r"ResultError: result of type set is not .*JSON-serialisable"),
        ("async_sleep", b"30", r"JobTimeout: ran past its 1s timeout"),
        ("cpu_sleep", b"30", r"JobTimeout: ran past its 1s timeout; its pool process was killed"),
        ("cpu_exit", b"", r"ChildDied: pool process died \(exit code 3\)"),
        ("cpu_segv", b"", r"ChildDied: pool process died \(killed by SIGSEGV\)"),
    ],
)
async def test_misbehaving_handler_ends_its_job_with_a_clear_failure(
    fault_server: Gearmand, fault_worker: WorkerProcess, function: str, workload: bytes, message: str
) -> None:
    """A handler that raises, returns an unserialisable value, hangs past its timeout or kills its process
    fails its job (WORK_FAIL with the reason as warning) instead of hanging it; the worker keeps serving."""
    async with Client([fault_server.address]) as client:
        with pytest.raises(JobFailed) as failure:
            await client.submit(function, workload, timeout=30)
        assert re.search(message, str(failure.value)), str(failure.value)
        assert await client.submit("cpu_echo", b"still serving", timeout=30) == b"still serving"
        assert await client.submit("echo", b"still serving", timeout=30) == b"still serving"


async def test_idle_pool_process_killed_from_outside_is_replaced_and_jobs_still_run(
    gearmand: Gearmand, results_db: Path
) -> None:
    """A pool process killed while idle (OOM killer, stray kill) is replaced when next used; the CPU jobs
    after it run normally (before the fix in Pool.run they hung forever)."""
    w = WorkerProcess([gearmand.address], handlers=HANDLERS, args=["--processes", "2"], env=env_for(results_db))
    w.start(wait_for="rec_cpu", gearmand=gearmand)
    try:
        for child in pool_children(w.pid):
            child.kill()
        async with Client([gearmand.address]) as client:
            results = await asyncio.gather(
                *(client.submit("rec_cpu", b"5", unique=f"idle-{i}", timeout=30) for i in range(6))
            )
        assert results == [b"ok"] * 6
        assert set(runs(results_db)) == {f"idle-{i}" for i in range(6)}
    finally:
        assert w.stop(20) == 0


async def test_job_of_a_pool_process_killed_mid_job_runs_again(gearmand: Gearmand, results_db: Path) -> None:
    """At-least-once: a background job whose pool process is SIGKILLed mid-job (OOM killer) runs again in a fresh
    pool process instead of failing (and so being lost)."""
    w = WorkerProcess([gearmand.address], handlers=HANDLERS, args=["--processes", "1"], env=env_for(results_db))
    w.start(wait_for="rec_cpu", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            await client.submit_background("rec_cpu", b"1500", unique="victim")
        deadline = time.monotonic() + 10
        while gearmand.status()["rec_cpu"][1] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        for child in pool_children(w.pid):
            child.kill()
        deadline = time.monotonic() + 60  # a new pool process, then the 1.5 s job again
        while "victim" not in runs(results_db) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert runs(results_db).get("victim") == 1, "the killed job did not run again"
        assert w.log_records("job.retry")
    finally:
        assert w.stop(20) == 0


async def test_draining_worker_does_not_reconnect(gearmand: Gearmand, results_db: Path) -> None:
    """After SIGTERM a worker that is waiting for a running job opens no new connection (it used to reconnect
    every connection it closed, hundreds of times a second, until the grace period ended)."""
    w = WorkerProcess([gearmand.address], handlers=HANDLERS, args=["--grace-period", "10"], env=env_for(results_db))
    w.start(wait_for="rec", gearmand=gearmand)
    async with Client([gearmand.address]) as client:
        await client.submit_background("rec", b"2000", unique="long")
        while gearmand.status()["rec"][1] == 0:
            await asyncio.sleep(0.05)
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0
    lines = w.log_text().splitlines()
    stopping = next(i for i, line in enumerate(lines) if '"server.stopping"' in line)
    reconnects = [line for line in lines[stopping:] if '"server.up"' in line]
    assert runs(results_db)["long"] == 1
    assert not reconnects, f"{len(reconnects)} reconnects while draining"
    assert w.log_records("server.stopped")
