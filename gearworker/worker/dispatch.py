"""The worker: takes jobs from every job server and hands them to the :class:`~gearworker.worker.runner.Runner`.

Functions are split into :class:`~gearworker.worker.capacity.Group` s by the
limits they count against (async handlers share the process-wide limit;
``cpu=True`` handlers also need a free pool process; a handler with its own
limit gets its own group).  Each group has its own
:class:`~gearworker.worker.connection.GroupConnection` to each server, and a connection only
grabs while every limit of its group has room: a CPU job that could not start
now stays on the server, where another worker machine may be idle.

Why connections per group rather than CAN_DO/CANT_DO on one connection:
gearmand 1.1.20 re-queues the jobs a connection holds for a function when
that connection sends CANT_DO (or RESET_ABILITIES) for it, so abilities can
never be withdrawn while a job runs.  Registrations here are made once per
connection and never changed.

The Gearman rules of one connection (grab, sleep, wake, which jobs it holds)
live in the sans-IO :class:`~gearworker.protocol.WorkerSession`; this module
only wires sessions to sockets (:mod:`gearworker.transport`) and to capacity.
"""

from __future__ import annotations

import asyncio
from typing import cast

import structlog

from ..clientid import worker_client_id
from ..config import Settings
from ..metrics import NO_METRICS, MetricsSink, NullMetrics
from ..protocol import JobAssigned, WorkerSession, registration
from ..transport import Endpoint, StreamOptions
from .capacity import Bucket, Function, Group, build_functions
from .chain import Chain
from .chain import build as build_middleware
from .connection import GroupConnection
from .pool import Pool
from .registry import Registry
from .runner import ActiveJob, Runner

__all__ = ["Worker"]

log = structlog.get_logger("gearworker.worker")


class Worker:
    """Takes jobs from all configured servers and runs them."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        pool: Pool | None,
        *,
        metrics: MetricsSink = NO_METRICS,
        middleware: Chain | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = pool
        self.metrics = metrics
        self.connections: list[GroupConnection] = []
        self.draining = False
        self.idle = asyncio.Event()
        self.idle.set()
        self.running = 0
        self.first_connection = asyncio.Event()
        self._exception_style = settings.failure_style == "exception"
        # The per-job log line and metrics are middlewares like any other (gearworker.middleware).
        if middleware is None:
            middleware = build_middleware([], [], metrics=None if isinstance(metrics, NullMetrics) else metrics)
        self.runner = Runner(
            pool, middleware, exception_style=self._exception_style, on_end=self._ended, on_thread=self._thread_places
        )
        #: Jobs still running whose connection dropped (on_connection_lost = "finish").
        self._orphans: set[ActiveJob] = set()
        #: SET_CLIENT_ID of every connection: gearadmin --workers shows it (host, pid, version),
        #: and the scheduler's election compares it (gearworker.schedule.rules).
        self.client_id = worker_client_id(settings.client_id)
        self._global = Bucket("concurrency", settings.concurrency)
        pool_size = pool.size if pool is not None else None
        self._functions, self.groups = build_functions(settings, registry, self._global, pool_size)
        self._rotation = 0
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Open a connection per group to every configured server (they connect in the background)."""
        s = self.settings
        options = StreamOptions.from_settings(s)
        for address in s.servers:
            for group in self.groups:
                session: WorkerSession[ActiveJob] = WorkerSession(
                    self.client_id.encode(), registration(group.timeouts), depth=s.grab_pipeline
                )
                conn = GroupConnection(self, group, Endpoint(address, options), session)
                self.connections.append(conn)
                conn.link.start()
        if s.idle_poll > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll(s.idle_poll), name="idle poll")

    @property
    def connected(self) -> int:
        """How many servers we have at least one live connection to."""
        return len({c.name for c in self.connections if c.stream is not None})

    # -- connections come and go --------------------------------------------
    def connection_up(self, conn: GroupConnection) -> None:
        self._report_server(conn.name)
        if conn.link.reconnects:
            self.metrics.reconnect(conn.name)
        self.first_connection.set()
        self.pump(conn)

    def connection_down(self, conn: GroupConnection) -> None:
        self._report_server(conn.name)
        self.pump_all()

    def _report_server(self, server: str) -> None:
        """A server is "connected" while any of its connections (one per group) is up."""
        up = any(c.stream is not None for c in self.connections if c.name == server)
        self.metrics.set_connection(server, "connected" if up else "down")

    # -- jobs -----------------------------------------------------------------
    def assigned(self, conn: GroupConnection, assigned: JobAssigned) -> None:
        """A grab of ``conn`` brought a job: its reserved place becomes a used one."""
        function = self._functions.get(assigned.function)
        stream = conn.stream
        assert stream is not None
        if function is None:
            self.release(conn.group, 1, pump=False)
            # gearmand never does this; a confused server might.  End the job
            # clearly rather than leave it running forever.
            log.error(
                "job.unknown_function",
                server=conn.name,
                function=assigned.function.decode(errors="replace"),
                handle=assigned.handle.decode(errors="replace"),
            )
            message = f"no handler for function {assigned.function!r} on this worker".encode()
            stream.send(conn.session.fail(assigned.handle, message, exception=self._exception_style))
        elif self.draining:
            self.release(conn.group, 1, pump=False)
            self._hand_back(conn, assigned)
            return
        else:
            for bucket in function.buckets:  # the group's buckets: the grab's reserved place is now used
                bucket.reserved -= 1
                bucket.used += 1
            self.running += 1
            self.idle.clear()
            self.runner.start(conn, function, assigned)
        self.pump(conn)

    def _hand_back(self, conn: GroupConnection, assigned: JobAssigned) -> None:
        """A job that a grab sent before draining began brought: not started, handed back.

        Its connection forgets it, and closes as soon as it holds nothing
        else (at once, or when its last running job ends): gearmand then
        re-queues it for another worker.  Kept in the session, it would keep
        the connection open, and the job assigned to us, until the whole
        worker stopped.
        """
        conn.session.forget(assigned.handle)
        log.info(
            "job.handed_back",
            function=assigned.function.decode(errors="replace"),
            handle=assigned.handle.decode(errors="replace"),
            server=conn.name,
            reason="draining",
        )
        if not conn.session.holding:
            conn.link.close()

    def orphaned(self, jobs: list[ActiveJob]) -> None:
        """``jobs`` lost their connection: gearmand re-queued them, their results cannot be delivered.

        With ``on_connection_lost = "cancel"`` (the default) they stop now: an
        async handler is cancelled, a CPU job's process killed.  With
        "finish" they run to the end.  Either way shutdown no longer waits for
        them.
        """
        cancel = self.settings.on_connection_lost == "cancel"
        for job in jobs:
            log.warning(
                "job.abandoned",
                function=job.function.name,
                handle=job.handle.decode(errors="replace"),
                unique=job.unique.decode(errors="replace"),
                server=job.conn.name,
                action="cancel" if cancel else "finish",
            )
            job.abandoned = True
            self._orphans.add(job)
            self.running -= 1
            if cancel and job.task is not None:
                job.task.cancel()
        if jobs and not self.running:
            self.idle.set()

    def _ended(self, job: ActiveJob) -> None:
        for bucket in job.function.buckets:
            bucket.used -= 1
        if job.abandoned:
            self._orphans.discard(job)
        else:
            self.running -= 1
        if self.draining:
            if not job.conn.session.holding:
                # The Runner types a job's connection as a JobSource; this worker's are GroupConnections.
                cast(GroupConnection, job.conn).link.close()  # hands back anything assigned but not started
        else:
            self.pump_all()
        if not self.running:
            self.idle.set()

    def _thread_places(self, function: Function, change: int) -> None:
        """A handler thread that outlived its job keeps (+1) a place in each of its limits until it returns (-1)."""
        for bucket in function.buckets:
            bucket.used += change
        if change < 0 and not self.draining:
            self.pump_all()

    # -- keeping grabs in flight --------------------------------------------
    def release(self, group: Group, grabs: int, *, pump: bool = True) -> None:
        """``grabs`` answered (or lost) grabs of ``group`` give back the places they reserved."""
        if grabs:
            group.release(grabs)
            if pump:
                self.pump_all()

    def pump(self, conn: GroupConnection) -> None:
        """Send ``conn`` the grabs its session wants (a probe, or a pipeline refill) while its group has room."""
        data = self.grabs(conn)
        if data and conn.stream is not None:
            conn.stream.send(data)

    def grabs(self, conn: GroupConnection) -> bytes:
        """The grabs ``conn``'s session wants and its group has room for, with their places reserved."""
        stream = conn.stream
        # is_open, not "is not None": between a connection's loss and the Link's
        # on_down call (one loop turn) the stream is set but closed.
        if stream is None or self.draining or not stream.is_open:
            return b""
        count = conn.session.wanted()
        if not count:
            return b""
        # Bucket.free and _reserve() inlined: this runs on every wake, where each call
        # costs a microsecond or more when the caches are cold (bench.reaction --gap-us).
        buckets = conn.group.buckets
        for bucket in buckets:
            free = bucket.limit - bucket.used - bucket.reserved
            if free < count:
                count = free
        if count <= 0:
            return b""
        for bucket in buckets:  # each grab may bring a job: hold a place for it
            bucket.reserved += count
        return conn.session.grab(count)

    def pump_all(self) -> None:
        """Offer free capacity to every connection, starting one further each time.

        Rotating the start keeps a low ``concurrency`` shared among servers
        instead of always going to the first one.
        """
        conns = self.connections
        if not conns:
            return
        self._rotation = start = (self._rotation + 1) % len(conns)
        for i in range(len(conns)):
            self.pump(conns[(start + i) % len(conns)])

    async def _poll(self, interval: float) -> None:
        # gearmand 1.1 hands out a scheduled (epoch) job only when something
        # wakes a worker (github.com/gearman/gearmand/issues/101), and 2.0.0 with --threads=0 never
        # writes the wake-up it queues: a sleeping connection asks anyway.
        while not self.draining:
            await asyncio.sleep(interval)
            for conn in self.connections:
                conn.poll()

    # -- shutdown -----------------------------------------------------------
    def stop_taking_jobs(self) -> None:
        """Take no new job; close connections that have nothing running."""
        self.draining = True
        if self._poller is not None:
            self._poller.cancel()
        for conn in self.connections:
            # No RESET_ABILITIES: gearmand would re-queue the jobs still running
            # here.  Connections with running jobs stay open to report results
            # and simply grab no more; the rest close now, for good.
            if not conn.session.holding:
                conn.link.close()

    def hand_back_retries(self) -> int:
        """Shutdown: jobs waiting for a retry go back to gearmand now (not at a reload: they finish there)."""
        return self.runner.hand_back_retries()

    def abandon(self) -> int:
        """Cancel every running job (past the grace period); they are handed back."""
        jobs = [job for conn in self.connections for job in conn.session.attached()]
        tasks = [job.task for job in (*jobs, *self._orphans) if job.task is not None]
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def close(self, timeout: float | None = None) -> None:
        """Close every connection and stop reconnecting; one not closed within ``timeout`` seconds is dropped."""
        # The job.done lines and metrics of jobs that completed in the last few ms.
        self.runner.completed_hooks.run()
        if self._poller is not None:
            self._poller.cancel()
        await asyncio.gather(*(conn.link.stop(timeout) for conn in self.connections))

    def drop(self) -> None:
        """Drop every connection at once, unsent data and all, and stop reconnecting (a forced stop)."""
        if self._poller is not None:
            self._poller.cancel()
        for conn in self.connections:
            conn.link.abort()
