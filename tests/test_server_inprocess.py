"""Server.serve() is a plain coroutine: start, serve and stop it in-process, no signals involved."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from gearmand import Gearmand
from support import TEST_HANDLERS

from gearworker import Client, config
from gearworker.app.server import Server
from gearworker.failed import FailedJob, FolderStore
from gearworker.failed.store import BatchWriter
from gearworker.protocol import JobAssigned
from gearworker.worker.connection import GroupConnection
from gearworker.worker.registry import discover


def start_server(
    gearmand: Gearmand, handlers_dir: str | Path = TEST_HANDLERS, **overrides: object
) -> tuple[Server, asyncio.Task[int]]:
    """A Server on ``gearmand`` with these settings (warning log level), serving in a task of the running loop."""
    settings = config.load(
        env={},
        overrides={
            "servers": [gearmand.address],
            "handlers_dir": str(handlers_dir),
            "log_level": "warning",
            **overrides,
        },
    )
    server = Server(settings, discover(settings.handlers_dir))
    return server, asyncio.create_task(server.serve())


async def test_serve_runs_jobs_and_returns_zero_when_asked_to_exit(gearmand: Gearmand) -> None:
    server, serving = start_server(gearmand, processes=1)
    async with Client([gearmand.address]) as client:
        assert await asyncio.wait_for(client.submit("echo", b"in-process"), 20) == b"in-process"
        assert await asyncio.wait_for(client.submit("cpu_echo", b"\x00pool\xff"), 20) == b"\x00pool\xff"
    assert server.healthy()
    server.should_exit.set()
    assert await asyncio.wait_for(serving, 20) == 0
    assert not server.healthy()


async def test_force_exit_cuts_the_grace_period_short(gearmand: Gearmand) -> None:
    """A second signal's event: a job that would outlive the grace is handed back at once."""
    server, serving = start_server(gearmand, processes=1, grace_period=60)
    async with Client([gearmand.address]) as client:
        await client.submit_background("async_long", b'{"seconds": 30}')
        while gearmand.status().get("async_long", (0, 0, 0))[1] == 0:
            await asyncio.sleep(0.05)
    server.should_exit.set()
    await asyncio.sleep(0.2)
    assert not serving.done()  # draining: waiting for the job
    server.force_exit.set()
    assert await asyncio.wait_for(serving, 10) == 0
    while gearmand.status()["async_long"][1] != 0:  # handed back: queued again, not running
        await asyncio.sleep(0.05)
    assert gearmand.status()["async_long"][0] == 1


SLOW_FAILURE = """
import asyncio
import time
from pathlib import Path
from gearworker import handler

@handler("fails_slowly", retries=1, retry_backoff=60)
async def fails_slowly(job):
    await asyncio.sleep(1)
    raise RuntimeError("the attempt fails after the shutdown began")
"""


async def test_an_attempt_that_fails_during_the_grace_period_is_handed_back_not_retried_later(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """Shutdown begins while a job's attempt runs; the attempt then fails with a retry 30-60 s away: the job goes
    back to gearmand at once (queued again) instead of waiting out the backoff inside the 60 s grace period."""
    (tmp_path / "slow.py").write_text(SLOW_FAILURE)
    server, serving = start_server(gearmand, tmp_path, grace_period=60)
    async with Client([gearmand.address]) as client:
        await client.submit_background("fails_slowly", b"")
        while gearmand.status().get("fails_slowly", (0, 0, 0))[1] == 0:
            await asyncio.sleep(0.05)
    server.should_exit.set()
    assert await asyncio.wait_for(serving, 10) == 0  # the attempt's 1 s, not the backoff nor the grace
    assert gearmand.status()["fails_slowly"][:2] == (1, 0)


DRAINING = """
import asyncio
from gearworker import handler

@handler("nap")
async def nap(job):
    await asyncio.sleep(float(job.text()))
    return b"napped"

@handler("long", concurrency=1)  # a limit of its own: a connection of its own
async def long(job):
    await asyncio.sleep(600)
"""


async def test_a_job_that_arrives_after_draining_began_is_handed_back_not_held_until_the_worker_stops(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """Draining begins while a connection's grabs are out; the job they bring is not started, and it goes back to
    gearmand once that connection's own running job ends: another worker runs it while the first still drains."""
    (tmp_path / "draining.py").write_text(DRAINING)
    settings = {
        "servers": [gearmand.address],
        "handlers_dir": str(tmp_path),
        "grab_pipeline": 4,
        "grace_period": 60,
        "log_level": "warning",
    }
    registry = discover(str(tmp_path))
    # No idle poll: every grab of the draining worker goes out through Worker.grabs, which the test watches.
    draining = Server(config.load(env={}, overrides={**settings, "idle_poll": 0}), registry)
    serving = asyncio.create_task(draining.serve())
    other = Server(config.load(env={}, overrides=settings), registry)
    other_serving: asyncio.Task[int] | None = None
    try:
        async with Client([gearmand.address]) as client:
            await client.submit_background("long", b"")  # keeps the worker draining for the whole grace period
            await client.submit_background("nap", b"2")  # keeps its connection open while draining
            while gearmand.status().get("long", (0, 0, 0))[1] == 0 or gearmand.status().get("nap", (0, 0, 0))[1] == 0:
                await asyncio.sleep(0.05)
            worker = draining.worker
            assert worker is not None
            # Draining begins just after the grabs answering the next job's wake-up are written.
            grabs, assign = worker.grabs, worker.assigned
            came_while_draining: list[bytes] = []

            def grabs_then_drain(conn: GroupConnection) -> bytes:
                data = grabs(conn)
                if data and not worker.draining:
                    worker.stop_taking_jobs()
                    draining.should_exit.set()
                return data

            def noting(conn: GroupConnection, assigned: JobAssigned) -> None:
                if worker.draining:
                    came_while_draining.append(assigned.handle)
                assign(conn, assigned)

            worker.grabs = grabs_then_drain  # type: ignore[method-assign]
            worker.assigned = noting  # type: ignore[method-assign]
            submitted = time.monotonic()
            late = asyncio.create_task(client.submit("nap", b"0", timeout=30))
            while not came_while_draining:
                await asyncio.sleep(0.01)
            other_serving = asyncio.create_task(other.serve())
            assert await asyncio.wait_for(late, 20) == b"napped"
            assert time.monotonic() - submitted < 15  # the nap of 2 s, not the grace period of 60
        assert not serving.done()  # the first worker still drains: the long job runs on
    finally:
        other.should_exit.set()
        draining.force_exit.set()
        draining.should_exit.set()
        assert await asyncio.wait_for(serving, 20) == 0
        if other_serving is not None:
            assert await asyncio.wait_for(other_serving, 20) == 0


class StuckStore(FolderStore):
    """A failed-jobs folder whose writes hang until :attr:`release` is set: a hung disk."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, workload_limit=1024)
        self.writing = threading.Event()
        self.release = threading.Event()

    def writer(self) -> BatchWriter:
        inner = super().writer()
        store = self

        class Stuck:
            def write(self, jobs: Sequence[FailedJob]) -> list[str]:
                store.writing.set()
                store.release.wait()
                return inner.write(jobs)

            def close(self) -> None:
                inner.close()

        return Stuck()


async def test_a_failed_jobs_store_that_does_not_write_holds_the_shutdown_no_longer_than_the_grace_period(
    gearmand: Gearmand, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job fails for good while its record cannot be written (a hung disk): the shutdown waits for the
    record no longer than its grace period, and the job, whose failure was never reported, is queued again."""
    store = StuckStore(tmp_path / "failed")
    monkeypatch.setattr("gearworker.failed.open_store", lambda path, workload_limit: store)
    server, serving = start_server(gearmand, processes=1, grace_period=1, failed_jobs=str(tmp_path / "failed"))
    try:
        async with Client([gearmand.address]) as client:
            await client.submit_background("raises", b"x")
        assert await asyncio.to_thread(store.writing.wait, 20), "the record to be written"
        started = time.monotonic()
        server.should_exit.set()
        assert await asyncio.wait_for(serving, 30) == 0
        took = time.monotonic() - started
        print(f"shutdown took {took:.2f} s (grace period 1 s)")
        assert took < 10  # 1 s, generously: the write never ends
        assert gearmand.status()["raises"][:2] == (1, 0)  # handed back: queued again, not running
    finally:
        store.release.set()
