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
from gearworker.worker.registry import discover


async def test_serve_runs_jobs_and_returns_zero_when_asked_to_exit(gearmand: Gearmand) -> None:
    settings = config.load(
        env={},
        overrides={
            "servers": [gearmand.address],
            "handlers_dir": str(TEST_HANDLERS),
            "processes": 1,
            "log_level": "warning",
        },
    )
    server = Server(settings, discover(settings.handlers_dir))
    serving = asyncio.create_task(server.serve())
    async with Client([gearmand.address]) as client:
        assert await asyncio.wait_for(client.submit("echo", b"in-process"), 20) == b"in-process"
        assert await asyncio.wait_for(client.submit("cpu_echo", b"\x00pool\xff"), 20) == b"\x00pool\xff"
    assert server.healthy()
    server.should_exit.set()
    assert await asyncio.wait_for(serving, 20) == 0
    assert not server.healthy()


async def test_force_exit_cuts_the_grace_period_short(gearmand: Gearmand) -> None:
    """A second signal's event: a job that would outlive the grace is handed back at once."""
    settings = config.load(
        env={},
        overrides={
            "servers": [gearmand.address],
            "handlers_dir": str(TEST_HANDLERS),
            "processes": 1,
            "grace_period": 60,
            "log_level": "warning",
        },
    )
    server = Server(settings, discover(settings.handlers_dir))
    serving = asyncio.create_task(server.serve())
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
    settings = config.load(
        env={},
        overrides={
            "servers": [gearmand.address],
            "handlers_dir": str(tmp_path),
            "grace_period": 60,
            "log_level": "warning",
        },
    )
    server = Server(settings, discover(settings.handlers_dir))
    serving = asyncio.create_task(server.serve())
    async with Client([gearmand.address]) as client:
        await client.submit_background("fails_slowly", b"")
        while gearmand.status().get("fails_slowly", (0, 0, 0))[1] == 0:
            await asyncio.sleep(0.05)
    server.should_exit.set()
    assert await asyncio.wait_for(serving, 10) == 0  # the attempt's 1 s, not the backoff nor the grace
    assert gearmand.status()["fails_slowly"][:2] == (1, 0)


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
    settings = config.load(
        env={},
        overrides={
            "servers": [gearmand.address],
            "handlers_dir": str(TEST_HANDLERS),
            "processes": 1,
            "grace_period": 1,
            "failed_jobs": str(tmp_path / "failed"),
            "log_level": "warning",
        },
    )
    server = Server(settings, discover(settings.handlers_dir))
    serving = asyncio.create_task(server.serve())
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
