"""The worker's scheduler: at each tick, if elected, submit the scheduled handler's background job.

See :mod:`gearworker.schedule.rules` for when ticks fall and why the job server's
``workers`` list decides which process submits.  This module is the loop
that does it; the job server access is passed in (two callables) so that the
loop can be tested with a fake clock and run by the worker with a real
:class:`gearworker.Client`.

Ticks are independent: each is fired in a task of its own and the loop goes
back to sleep for the next one at once, so nothing a tick waits for (an
admin query, a connect, a submit) can delay the next.  Each of those waits
is bounded too: the election waits :data:`ELECTION_WAIT` for each server's
``workers`` list and a submit :data:`SUBMIT_WAIT` for its JOB_CREATED; a
server silent that long is marked down for the whole process
(:mod:`gearworker.client.health`) and skipped, by every tick and every
client, until it answers again.  Measured with one of two gearmand servers
hung (SIGSTOP) for 90 s, schedule=2, 3 worker processes: before, 34 of 49
ticks never ran, the rest up to 31 s late, 2 ran twice; see docs/jobs.md for
the figures now.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from .rules import Cron, Interval, WorkerEntry, elect, tick_unique

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "ELECTION_WAIT",
    "MAX_AGE",
    "SUBMIT_WAIT",
    "TICK_DEADLINE",
    "ScheduledFunction",
    "Scheduler",
    "run_schedules",
    "scheduled_functions",
    "tick_workload",
]

log = structlog.get_logger("gearworker.scheduler")

#: Ticks older than this many seconds are skipped, not fired late (the ``schedule_max_age`` setting's
#: default; a worker that gets a tick older than it drops it too: worker/runner.py).
MAX_AGE = 60.0
#: Seconds the election waits for each server's ``workers`` list; a server silent that long is down.
ELECTION_WAIT = 1.0
#: Seconds a tick's submit waits for a server's JOB_CREATED before it goes to the next server.
SUBMIT_WAIT = 2.0
#: Seconds after which a tick's task gives up, whatever it waits for (each wait is bounded already).
TICK_DEADLINE = 30.0

#: ``server -> rows`` of each reachable job server's ``workers`` list.
WorkersQuery = Callable[[], Awaitable[Mapping[str, Sequence[WorkerEntry]]]]
#: ``(function, workload, unique)``: submit a background job.
Submit = Callable[[str, bytes, str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class ScheduledFunction:
    """A function whose job is submitted at every tick of ``schedule``."""

    function: str
    schedule: Interval | Cron


def tick_workload(tick: int, schedule: Interval | Cron) -> bytes:
    """The job's workload: ``{"tick": <unix time>, "schedule": "<schedule>"}`` (read it with ``job.json()``)."""
    return json.dumps({"tick": tick, "schedule": str(schedule)}, separators=(",", ":")).encode()


class Scheduler:
    """Runs every schedule of one worker process until cancelled."""

    def __init__(
        self,
        functions: Sequence[ScheduledFunction],
        client_id: str,
        *,
        workers: WorkersQuery,
        submit: Submit,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        own: Callable[[str, str], int] | None = None,
        max_age: float = MAX_AGE,
    ) -> None:
        self.functions = list(functions)
        self.max_age = max_age
        self.client_id = client_id
        self._workers = workers
        self._submit = submit
        self._clock = clock
        self._sleep = sleep
        # (server, function) -> how many of this process's connections to that
        # server serve the function: 1, or 2 while a reload's old connections finish.
        self._own = own or (lambda server, function: 1)
        #: Ticks this process submitted, per function (for tests and logs).
        self.submitted: dict[str, list[int]] = {f.function: [] for f in self.functions}
        self._firing: set[asyncio.Task[None]] = set()  # ticks being fired now

    async def run(self) -> None:
        """One loop per scheduled function; returns only when cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                for f in self.functions:
                    group.create_task(self._loop(f))
        finally:
            for task in self._firing:
                task.cancel()

    async def _loop(self, f: ScheduledFunction) -> None:
        tick = f.schedule.next_after(self._clock())
        while True:
            await self._sleep_until(tick)
            # A loop that lagged (a busy host) fires the ticks it is late for, one
            # after another; a process stopped for long (a suspended VM) skips
            # what is more than max_age seconds old rather than firing it all.
            if self._clock() - tick > self.max_age:
                late, tick = tick, f.schedule.next_after(self._clock())
                log.warning("schedule.behind", function=f.function, skipped_from=late, next=tick)
                continue
            # Fired beside the loop, not awaited: a tick that waits (a hung server) must not delay the next.
            task = asyncio.get_running_loop().create_task(self._fire_one(f, tick))
            self._firing.add(task)
            task.add_done_callback(self._firing.discard)
            tick = f.schedule.next_after(tick)

    async def _fire_one(self, f: ScheduledFunction, tick: int) -> None:
        try:
            async with asyncio.timeout(TICK_DEADLINE):
                await self.fire(f, tick)
        except Exception as e:  # a server error must not end the schedule
            error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            log.warning("schedule.error", function=f.function, tick=tick, error=error)

    async def _sleep_until(self, tick: int) -> None:
        # Wall-clock ticks, monotonic sleeps: re-check the wall clock after each
        # sleep, since the clock may be stepped (NTP) while we sleep.
        while (delay := tick - self._clock()) > 0:
            await self._sleep(min(delay, 60.0))

    async def fire(self, f: ScheduledFunction, tick: int) -> bool:
        """Submit ``f``'s job for ``tick`` if this process is elected; return whether it did."""
        tables = await self._workers()
        rows = [row for table in tables.values() for row in table]
        leader = elect(rows, f.function)
        self._warn_on_clash(tables, f.function, leader)
        if leader != self.client_id:
            log.debug("schedule.skip", function=f.function, tick=tick, leader=leader)
            return False
        unique = tick_unique(f.function, tick)
        await self._submit(f.function, tick_workload(tick, f.schedule), unique)
        self.submitted[f.function].append(tick)
        log.info("schedule.submitted", function=f.function, tick=tick, unique=unique)
        return True

    def _warn_on_clash(self, tables: Mapping[str, Sequence[WorkerEntry]], function: str, leader: str | None) -> None:
        # Each process has one connection per server registered for a function
        # (two for a moment after a reload): more rows with the winning id mean
        # two processes share a client id, and both would submit.
        for server, table in tables.items():
            same = sum(1 for r in table if r.client_id == leader and function in r.functions)
            if same > (self._own(server, function) if leader == self.client_id else 1):
                log.warning(
                    "schedule.client_id_clash",
                    function=function,
                    server=server,
                    client_id=leader,
                    connections=same,
                    hint="client ids must be unique per process: ticks may run more than once",
                )


def scheduled_functions(handlers: Iterable[Any]) -> list[ScheduledFunction]:
    """The handlers (of a registry) that have a schedule."""
    return [ScheduledFunction(h.name, h.schedule) for h in handlers if h.schedule is not None]


async def run_schedules(
    servers: Sequence[str],
    functions: Sequence[ScheduledFunction],
    client_id: str,
    *,
    settings: Settings,
    own: Callable[[str, str], int] | None = None,
    max_age: float = MAX_AGE,
) -> None:
    """Run ``functions``' schedules for the worker whose connections carry ``client_id``, until cancelled.

    Uses its own :class:`gearworker.Client`, connecting as ``settings``
    say (TLS, heartbeat, timeouts: :meth:`~gearworker.Client.from_settings`):
    the admin ``workers`` query for the election (a short connection per
    server per tick, at most :data:`ELECTION_WAIT` each) and SUBMIT_JOB_BG
    (:data:`SUBMIT_WAIT` per server).  Servers known down to the process are
    skipped by both.
    """
    from ..client import Client

    async with Client.from_settings(settings, servers) as client:

        async def workers() -> Mapping[str, Sequence[WorkerEntry]]:
            tables = await client.workers(timeout=ELECTION_WAIT)
            return {server: [WorkerEntry(r.client_id, r.functions) for r in rows] for server, rows in tables.items()}

        async def submit(function: str, workload: bytes, unique: str) -> None:
            await client.submit_background(function, workload, unique=unique, answer_timeout=SUBMIT_WAIT)

        log.info("schedule.started", client_id=client_id, schedules={f.function: str(f.schedule) for f in functions})
        await Scheduler(functions, client_id, workers=workers, submit=submit, own=own, max_age=max_age).run()
