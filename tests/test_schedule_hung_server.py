"""A job server that hangs stalls no schedule: ticks are independent, a silent server is known down to the
whole process, and a tick that reaches a worker too late is dropped.

The scenario with real processes (2 gearmand, 3 workers, one gearmand SIGSTOPped) is
tests/reliability/test_failure_path.py; here each piece on its own, against real gearmand where it matters.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
from gearmand import Gearmand
from support import MakeGearmand, WorkerProcess, handlers_dir

from gearworker import Client
from gearworker.client.health import server_health
from gearworker.errors import ConnectionLost
from gearworker.schedule.rules import Interval, WorkerEntry, tick_unique
from gearworker.schedule.runner import ScheduledFunction, Scheduler


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(0)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_tick_that_waits_for_a_server_does_not_delay_the_next_tick() -> None:
    """The first tick's election never gets its answer; the next four ticks are still submitted on time."""
    clock = FakeClock(100.5)
    submitted: list[int] = []
    first = True
    hold = asyncio.Event()

    async def workers() -> Mapping[str, Sequence[WorkerEntry]]:
        nonlocal first
        if first:
            first = False
            await hold.wait()  # a server that does not answer
        return {"s": [WorkerEntry("me", ("f",))]}

    async def submit(function: str, workload: bytes, unique: str) -> None:
        submitted.append(int(unique.rsplit(":", 1)[1]))

    scheduler = Scheduler(
        [ScheduledFunction("f", Interval(1))], "me", workers=workers, submit=submit, clock=clock, sleep=clock.sleep
    )
    task = asyncio.create_task(scheduler.run())
    await settle()
    for _ in range(5):
        clock.now += 1
        await settle()
    assert submitted == [102, 103, 104, 105]  # tick 101 still waits; nothing behind it did
    hold.set()
    await settle()
    assert sorted(submitted) == [101, 102, 103, 104, 105]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def two(gearmand_factory: MakeGearmand) -> AsyncIterator[tuple[Gearmand, Gearmand]]:
    """Two servers; the first is the one the test hangs (resumed, and its probe stopped, afterwards)."""
    hung, healthy = gearmand_factory(), gearmand_factory()
    yield hung, healthy
    assert hung.proc is not None
    hung.proc.send_signal(signal.SIGCONT)
    server_health().close()


async def test_a_server_that_does_not_answer_is_down_for_every_client_until_it_answers(
    two: tuple[Gearmand, Gearmand],
) -> None:
    """SIGSTOP one of two servers: one admin query waits for it (0.5 s) and marks it down; every client of the
    process then skips it at once (admin queries, submits with a unique id that hashes to it); once resumed, the
    probe's pending question is answered and it is used again."""
    hung, healthy = two
    assert hung.proc is not None
    async with Client([hung.address, healthy.address]) as scheduler, Client([hung.address, healthy.address]) as other:
        hung.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        assert list(await scheduler.workers(timeout=0.5)) == [healthy.address]
        assert 0.4 < time.monotonic() - started < 3.0
        assert server_health().is_down(hung.address)

        started = time.monotonic()
        assert list(await other.server_status(timeout=5)) == [healthy.address]  # not asked: no 5 s wait
        unique = next(u for u in (f"u-{i}" for i in range(100)) if other.server_for(u) == hung.address)
        handle = await other.submit_background("nobody", b"", unique=unique)
        assert handle.server == healthy.address and time.monotonic() - started < 1.0

        hung.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while server_health().is_down(hung.address):
            assert time.monotonic() < deadline, "the resumed server is used again"
            await asyncio.sleep(0.05)
        assert sorted(await other.server_status()) == sorted([hung.address, healthy.address])


async def test_a_submit_a_silent_server_does_not_answer_goes_to_the_next_server(
    two: tuple[Gearmand, Gearmand],
) -> None:
    """answer_timeout: the server the unique id hashes to is connected but hung; after 0.5 s without its
    JOB_CREATED the job goes to the other server and the silent one is marked down."""
    hung, healthy = two
    assert hung.proc is not None
    async with Client([hung.address, healthy.address]) as client:
        unique = next(u for u in (f"u-{i}" for i in range(100)) if client.server_for(u) == hung.address)
        await client.status_unique("x", server=hung.address)  # connected before it hangs
        hung.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        handle = await client.submit_background("nobody", b"", unique=unique, answer_timeout=0.5)
        assert handle.server == healthy.address
        assert time.monotonic() - started < 3.0
        assert server_health().is_down(hung.address)
        async with Client([hung.address]) as alone:
            with pytest.raises(ConnectionLost, match="did not answer a submit"):
                # Only the silent server to try: the error says which and why.
                await alone.submit_background("nobody", b"", unique="v", answer_timeout=0.3)


TICK = """
import os
from gearworker import handler


@handler("tick", schedule=3600)
async def tick(job):
    with open(os.environ["GW_TICK_FILE"], "a") as f:
        f.write(job.unique.decode() + "\\n")
"""


async def test_a_tick_a_resumed_server_hands_out_after_the_age_bound_is_dropped(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """A gearmand hangs with a tick's submit in its buffers (the scheduler has given up on it and resubmitted it
    elsewhere); it resumes 4 s later with schedule_max_age = 3: the worker ends the job without running it and
    logs schedule.tick_dropped.  A tick within the bound runs."""
    ran = tmp_path / "ran"
    ran.touch()
    w = WorkerProcess(
        [gearmand.address],
        handlers=handlers_dir(tmp_path, ticks=TICK),
        env={"GW_TICK_FILE": str(ran), "GEARWORKER_SCHEDULE_MAX_AGE": "3"},
    )
    w.start(wait_for="tick", gearmand=gearmand)
    assert gearmand.proc is not None
    try:
        old = int(time.time())
        async with Client([gearmand.address]) as client:
            await client.status_unique("x")  # connected before the hang
            gearmand.proc.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(ConnectionLost):
                    await client.submit_background("tick", b"", unique=tick_unique("tick", old), answer_timeout=0.5)
                await asyncio.sleep(4)
            finally:
                gearmand.proc.send_signal(signal.SIGCONT)
            fresh = int(time.time())
            await client.submit_background("tick", b"", unique=tick_unique("tick", fresh))
        deadline = time.monotonic() + 15
        while "schedule.tick_dropped" not in w.log_text() or not ran.read_text():
            assert time.monotonic() < deadline, w.log_text()[-2000:]
            await asyncio.sleep(0.1)
        while gearmand.status()["tick"][:2] != (0, 0):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        assert w.stop() == 0
    assert ran.read_text().split() == [tick_unique("tick", fresh)]
    assert f'"tick": {old}' in w.log_text() or f'"tick":{old}' in w.log_text()
