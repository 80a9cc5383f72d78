"""Edge cases found in review, each pinned in-process against a real gearmand."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from gearmand import Gearmand

from gearworker import Client, Job, JobFailed, config
from gearworker.client import Progress
from gearworker.worker.dispatch import Worker
from gearworker.worker.job import CpuJobSpec
from gearworker.worker.pool import Pool, PoolTimeout
from gearworker.worker.registry import Handler, Registry, discover

SPAM = """
from gearworker import handler

@handler("spam", cpu=True)
def spam(job):
    while True:
        job.send_data(b"x" * 200)

@handler("quick", cpu=True)
def quick(job):
    job.status(1, 2)
    return b"ok"
"""


async def test_a_process_killed_mid_report_does_not_block_the_other_slots_or_shutdown(tmp_path: Path) -> None:
    """Each slot reports on its own pipe: a timeout kill during a write cannot leave a shared lock held."""
    (tmp_path / "spam.py").write_text(SPAM)
    settings = config.load(
        env={},
        overrides={"servers": ["127.0.0.1:1"], "handlers_dir": str(tmp_path), "processes": 2, "log_level": "error"},
    )
    registry = discover(settings.handlers_dir)
    reports: list[str] = []
    pool = Pool(settings)

    def report(kind: str, args: tuple[bytes, ...]) -> None:
        reports.append(kind)

    await pool.start()
    try:
        for token in range(1, 9, 2):
            with pytest.raises(PoolTimeout):
                await pool.run(
                    registry.functions["spam"].func, CpuJobSpec(token, "spam", b"H:1", b"", b""), 0.3, report
                )
            ok, result = await pool.run(
                registry.functions["quick"].func, CpuJobSpec(token + 1, "quick", b"H:2", b"", b""), 10, report
            )
            assert (ok, result) == (True, b"ok")
        assert "status" in reports
    finally:
        await asyncio.wait_for(pool.close(), 10)


async def _awaits_a_cancelled_future(job: Job) -> bytes:
    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    future.cancel()  # an operation someone else cancelled
    return await future


@contextlib.asynccontextmanager
async def _serving(
    gearmand: Gearmand, func: Callable[[Job], Awaitable[Any]], timeout: float | None = None
) -> AsyncIterator[Worker]:
    """A worker in this process serving ``func`` as function "h" on ``gearmand``."""
    settings = config.load(env={}, overrides={"servers": [gearmand.address], "log_level": "error"})
    registry = Registry()
    registry.add(Handler("h", func, False, timeout, None, "test", True))
    worker = Worker(settings, registry, None)
    worker.start()
    try:
        yield worker
    finally:
        await worker.close()


async def test_cancelled_error_from_handler_code_fails_the_job_instead_of_leaving_it_open(gearmand: Gearmand) -> None:
    async with _serving(gearmand, _awaits_a_cancelled_future) as worker, Client([gearmand.address]) as client:
        with pytest.raises(JobFailed, match="CancelledError"):
            await asyncio.wait_for(client.submit("h", b""), 10)
        assert worker.running == 0


async def _opens_a_timeout_and_a_task_group_before_awaiting(job: Job) -> bytes:
    async with asyncio.timeout(5):
        async with asyncio.TaskGroup() as group:
            child = group.create_task(asyncio.sleep(0, b"done"))
    return child.result()


@pytest.mark.parametrize("timeout", [None, 5.0], ids=["no timeout", "its own timeout"])
async def test_a_handler_may_open_asyncio_timeout_or_a_task_group_before_its_first_await(
    gearmand: Gearmand, timeout: float | None
) -> None:
    """Handlers start eagerly, inside the read: still inside their Task, which both need (3.11 failed the job)."""
    async with (
        _serving(gearmand, _opens_a_timeout_and_a_task_group_before_awaiting, timeout),
        Client([gearmand.address]) as client,
    ):
        assert await asyncio.wait_for(client.submit("h", b""), 10) == b"done"


async def test_a_job_finishing_as_its_connection_drops_still_counts_as_done(gearmand: Gearmand) -> None:
    """The stream is closed a loop turn before link_down: no send on it, idle is set, the link reconnects."""
    release = asyncio.Event()

    async def wait_then_echo(job: Job) -> bytes:
        await release.wait()
        return job.workload

    settings = config.load(
        env={},
        overrides={
            "servers": [gearmand.address],
            "log_level": "error",
            "concurrency": 1,
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
        },
    )
    registry = Registry()
    registry.add(Handler("w", wait_then_echo, False, None, None, "test", True))
    worker = Worker(settings, registry, None)
    worker.start()
    try:
        async with Client([gearmand.address]) as client:
            submitted = asyncio.create_task(client.submit_background("w", b"x"))
            await submitted
            while worker.running == 0:
                await asyncio.sleep(0.01)
            (conn,) = worker.connections
            assert conn.stream is not None
            conn.stream.abort()  # the connection drops...
            release.set()  # ...in the same turn as the job ends
            await asyncio.wait_for(worker.idle.wait(), 5)
            assert worker.running == 0
            while not worker.connected:
                await asyncio.sleep(0.02)
            # It came back: the re-queued job runs again and completes there.
            while gearmand.status().get("w", (1, 0, 0))[0] != 0:
                await asyncio.sleep(0.02)
    finally:
        await worker.close()


async def test_coalesced_submits_on_one_connection_each_see_every_event_once(gearmand: Gearmand) -> None:
    """gearmand sends one copy of each WORK_DATA/WARNING per coalesced submit; each caller gets one, not all."""

    async def chunks(job: Job) -> bytes:
        await job.send_data(b"chunk")
        await job.warning(b"careful")
        return b"done"

    settings = config.load(env={}, overrides={"servers": [gearmand.address], "log_level": "error"})
    registry = Registry()
    registry.add(Handler("chunks", chunks, False, None, None, "test", True))
    async with Client([gearmand.address]) as client:
        seen: list[list[bytes]] = [[], [], []]

        def keep_in(into: list[bytes]) -> Callable[[Progress], None]:
            return lambda e: into.append(e.data)

        submits = [
            asyncio.create_task(client.submit("chunks", b"x", unique="same", on_progress=keep_in(seen[i])))
            for i in range(3)
        ]
        while gearmand.status().get("chunks", (0, 0, 0))[0] == 0:
            await asyncio.sleep(0.02)
        worker = Worker(settings, registry, None)
        worker.start()
        try:
            assert await asyncio.wait_for(asyncio.gather(*submits), 10) == [b"done"] * 3
        finally:
            await worker.close()
    assert seen == [[b"chunk", b"careful"]] * 3
