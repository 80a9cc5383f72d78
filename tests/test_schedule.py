"""Schedules: cron expressions and intervals compute the right ticks; the election picks one submitter.

Several worker processes or hosts with the same schedule run each tick once:
with 3 processes over 20 ticks, 20 runs and no tick twice.  Here with the real
:class:`Scheduler` loop of three "processes" sharing one simulated ``workers``
table; tests/test_jobqueue_gearmand.py does it with real worker processes and gearmand.
"""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest

from gearworker.schedule.rules import Cron, Interval, ScheduleError, WorkerEntry, elect, parse, tick_unique
from gearworker.schedule.runner import ScheduledFunction, Scheduler, tick_workload


def ts(text: str) -> int:
    return calendar.timegm(datetime.fromisoformat(text).replace(tzinfo=UTC).utctimetuple())


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


def ticks(expr: str, start: str, n: int) -> list[str]:
    cron = Cron.parse(expr)
    out, t = [], float(ts(start))
    for _ in range(n):
        t = cron.next_after(t)
        out.append(iso(int(t)))
    return out


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        ("* * * * *", "2026-11-29 10:00:30", ["2026-11-29 10:01", "2026-11-29 10:02"]),
        (
            "*/15 * * * *",
            "2026-11-29 10:07",
            ["2026-11-29 10:15", "2026-11-29 10:30", "2026-11-29 10:45", "2026-11-29 11:00"],
        ),
        (
            "5/20 2-3 * * *",
            "2026-11-29 00:00",
            ["2026-11-29 02:05", "2026-11-29 02:25", "2026-11-29 02:45", "2026-11-29 03:05"],
        ),
        ("0 9 * * mon-fri", "2026-11-27 10:00", ["2026-11-30 09:00", "2026-12-01 09:00"]),  # Fri -> Mon
        ("30 4 1,15 * *", "2026-11-29 00:00", ["2026-12-01 04:30", "2026-12-15 04:30", "2027-01-01 04:30"]),
        ("0 0 29 feb *", "2026-01-01 00:00", ["2028-02-29 00:00"]),  # next leap day
        ("0 12 * dec sun", "2026-11-29 00:00", ["2026-12-06 12:00", "2026-12-13 12:00"]),
        ("0 0 * * 7", "2026-11-29 00:00", ["2026-12-06 00:00"]),  # 7 is Sunday too
        ("0 0 13 * fri", "2026-11-01 00:00", ["2026-11-06 00:00", "2026-11-13 00:00"]),  # both days: either matches
        ("@hourly", "2026-11-29 10:59:59", ["2026-11-29 11:00", "2026-11-29 12:00"]),
        ("@daily", "2026-12-31 23:59", ["2027-01-01 00:00"]),
        ("0 0 1 JAN,Jul *", "2026-02-01 00:00", ["2026-07-01 00:00", "2027-01-01 00:00"]),
    ],
)
def test_cron_next_ticks_match_cron_semantics(expr: str, start: str, expected: list[str]) -> None:
    """Each expression's next ticks after a moment are the ones cron would run (UTC)."""
    assert ticks(expr, start, len(expected)) == expected


def test_cron_tick_is_strictly_after_the_given_moment() -> None:
    """A moment exactly on a tick gives the next one: a tick is never fired twice by one loop."""
    cron = Cron.parse("*/5 * * * *")
    assert cron.next_after(ts("2026-11-29 10:05")) == ts("2026-11-29 10:10")


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("* * * *", ["4 fields", "expected 5"]),
        ("60 * * * *", ["minute field", "60 is outside 0-59"]),
        ("* 24 * * *", ["hour field", "outside 0-23"]),
        ("* * 0 * *", ["day of month field", "outside 1-31"]),
        ("* * * 13 *", ["month field", "outside 1-12"]),
        ("* * * foo *", ["month field", "'foo' is not a number", "jan"]),
        ("* * * * 8", ["day of week field", "outside 0-7"]),
        ("*/0 * * * *", ["step 0"]),
        ("10-5 * * * *", ["runs backwards"]),
        ("1,,2 * * * *", ["empty list item"]),
        ("0 0 31 feb *", ["never exists"]),
    ],
)
def test_bad_cron_expressions_say_which_field_is_wrong(expr: str, words: list[str]) -> None:
    """A bad expression fails at parse time with the field and the reason."""
    with pytest.raises(ScheduleError) as info:
        Cron.parse(expr)
    for word in words:
        assert word in str(info.value)


def test_interval_ticks_fall_on_multiples_of_the_interval_since_the_epoch() -> None:
    """Every process computes the same tick times whenever it started."""
    every = Interval(60)
    assert every.next_after(ts("2026-11-29 10:00:01")) == ts("2026-11-29 10:01")
    assert every.next_after(ts("2026-11-29 10:01")) == ts("2026-11-29 10:02")
    assert Interval(1).next_after(100.5) == 101


@pytest.mark.parametrize("value", [0, -1, 1.5, "x y", True, None, []])
def test_bad_schedules_are_refused(value: object) -> None:
    """Intervals must be whole seconds >= 1; strings must be cron expressions."""
    with pytest.raises(ScheduleError):
        parse(value)


def test_tick_unique_ids_are_per_function_and_tick_and_fit_gearmand() -> None:
    """`sched:<function>:<tick>`, hashed when a long function name would pass gearmand's 63-byte limit."""
    assert tick_unique("report", 1764410400) == "sched:report:1764410400"
    long_a, long_b = "a" * 80, "a" * 79 + "b"
    assert len(tick_unique(long_a, 1764410400)) <= 63
    assert tick_unique(long_a, 1) != tick_unique(long_b, 1)
    assert tick_unique(long_a, 1) == tick_unique(long_a, 1)


def test_election_picks_the_lowest_client_id_registered_for_the_function() -> None:
    """Clients (id '-') and workers of other functions never win."""
    rows = [
        WorkerEntry("-", ()),
        WorkerEntry("a-1", ("other",)),
        WorkerEntry("host-20", ("report", "echo")),
        WorkerEntry("host-100", ("report",)),
        WorkerEntry("-", ("report",)),
    ]
    assert elect(rows, "report") == "host-100"  # string order, the same in every process
    assert elect(rows, "missing") is None


async def settle() -> None:
    """Let every scheduler loop run until it waits on the clock again."""
    for _ in range(20):
        await asyncio.sleep(0)


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(0)  # the loop re-reads the clock: time moves only when the test moves it


async def test_three_processes_over_twenty_ticks_submit_each_tick_once() -> None:
    """Three schedulers sharing one workers table: 20 ticks give 20 submits, no tick twice.

    Halfway through, the elected process leaves (its connection disappears
    from the table): the next one takes over without a gap or a repeat.
    """
    clock = FakeClock(1_000_000.5)
    members = {"host-1": True, "host-2": True, "host-3": True}
    submitted: list[tuple[str, int, str]] = []

    async def workers() -> Mapping[str, Sequence[WorkerEntry]]:
        return {"s1": [WorkerEntry(cid, ("tick",)) for cid, up in members.items() if up]}

    def make(cid: str) -> Scheduler:
        async def submit(function: str, workload: bytes, unique: str) -> None:
            submitted.append((cid, int(unique.rsplit(":", 1)[1]), workload.decode()))

        return Scheduler(
            [ScheduledFunction("tick", Interval(1))],
            cid,
            workers=workers,
            submit=submit,
            clock=clock,
            sleep=clock.sleep,
        )

    schedulers = [make(cid) for cid in members]
    tasks = [asyncio.create_task(s.run()) for s in schedulers]
    await settle()  # each loop reads the clock once before time moves
    for step in range(20):
        if step == 10:
            members["host-1"] = False
            tasks[0].cancel()
        clock.now += 1
        await settle()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ticks_run = [tick for _, tick, _ in submitted]
    assert len(ticks_run) == 20
    assert sorted(ticks_run) == list(range(1_000_001, 1_000_021))
    assert {cid for cid, _, _ in submitted} == {"host-1", "host-2"}
    assert submitted[0][2] == tick_workload(1_000_001, Interval(1)).decode()


async def test_a_failing_workers_query_skips_the_tick_and_keeps_the_schedule() -> None:
    """No server answering is logged; the next tick is tried again."""
    clock = FakeClock(500.5)
    calls = 0
    done: list[str] = []

    async def workers() -> Mapping[str, Sequence[WorkerEntry]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("connection refused")
        return {"s": [WorkerEntry("me", ("f",))]}

    async def submit(function: str, workload: bytes, unique: str) -> None:
        done.append(unique)

    task = asyncio.create_task(
        Scheduler(
            [ScheduledFunction("f", Interval(1))], "me", workers=workers, submit=submit, clock=clock, sleep=clock.sleep
        ).run()
    )
    await settle()
    for _ in range(2):
        clock.now += 1
        await settle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert done == ["sched:f:502"]


async def test_a_lagging_loop_fires_late_ticks_but_skips_what_is_too_old() -> None:
    """Late by 2 s: both ticks still run.  Suspended for 10 minutes: the old ticks are skipped."""
    clock = FakeClock(100.5)
    done: list[int] = []

    async def workers() -> Mapping[str, Sequence[WorkerEntry]]:
        return {"s": [WorkerEntry("me", ("f",))]}

    async def submit(function: str, workload: bytes, unique: str) -> None:
        done.append(int(unique.rsplit(":", 1)[1]))

    task = asyncio.create_task(
        Scheduler(
            [ScheduledFunction("f", Interval(1))], "me", workers=workers, submit=submit, clock=clock, sleep=clock.sleep
        ).run()
    )
    await settle()
    clock.now = 103.2  # ticks 101, 102 and 103 are due
    await settle()
    clock.now = 703.5  # 10 minutes later
    await settle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert done[:3] == [101, 102, 103]
    assert done[3:] == [704] or done[3:] == []  # nothing from the 10 minutes in between


async def test_two_processes_sharing_a_client_id_are_warned_of(capsys: pytest.CaptureFixture[str]) -> None:
    """Two rows with the winning id (and one own connection) log schedule.client_id_clash; a reload's second
    connection of our own does not."""
    rows = {"s": [WorkerEntry("worker-1", ("f",)), WorkerEntry("worker-1", ("f",))]}

    async def workers() -> Mapping[str, Sequence[WorkerEntry]]:
        return rows

    async def submit(function: str, workload: bytes, unique: str) -> None:
        pass

    f = ScheduledFunction("f", Interval(1))
    assert await Scheduler([f], "worker-1", workers=workers, submit=submit).fire(f, 10)
    assert "schedule.client_id_clash" in capsys.readouterr().out
    reloading = Scheduler([f], "worker-1", workers=workers, submit=submit, own=lambda server, function: 2)
    assert await reloading.fire(f, 11)
    assert "schedule.client_id_clash" not in capsys.readouterr().out
