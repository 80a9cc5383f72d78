"""The worker: takes jobs from every job server and runs them.

Functions are split into :class:`Group` s by the limits they count against
(async handlers share the process-wide limit; ``cpu=True`` handlers also need
a free pool process; a handler with its own limit gets its own group).  Each
group has its own connection to each server, and a connection only grabs
while every limit of its group has room: a CPU job that could not start now
stays on the server, where another worker machine may be idle.

Why connections per group rather than CAN_DO/CANT_DO on one connection:
gearmand 1.1.20 re-queues the jobs a connection holds for a function when
that connection sends CANT_DO (or RESET_ABILITIES) for it, so abilities can
never be withdrawn while a job runs.  Registrations here are made once per
connection and never changed.

One :class:`Session` per connection holds its Gearman state (outstanding
grabs, sleeping or awake, the jobs it handed us).  :class:`Worker` owns the
sessions, the capacity buckets and the running jobs.  Everything here runs on
the event loop; nothing blocks.

The grab cycle, per connection::

    CAN_DO f...            register the group's functions, once
    GRAB_JOB_UNIQ x N      up to ``grab_pipeline`` outstanding (one round trip
                           per job would cap us at the C workers' speed)
    <- JOB_ASSIGN_UNIQ     start it, grab again
    <- NO_JOB              stop grabbing; once no grab is outstanding:
    PRE_SLEEP              gearmand answers NOOP when work arrives
    <- NOOP                grab again
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from .backoff import Backoff
from .capacity import Bucket
from .config import Settings
from .connection import Link, PacketStream
from .errors import RemoteProtocolError
from .handlers import Handler, Registry
from .job import CpuJobSpec, Job, to_bytes
from .middleware import Chain, JobInfo, JobResult
from .middleware import build as build_middleware
from .pool import ChildDied, Pool, PoolTimeout
from .protocol import Packet, PacketType, encode_request
from .retry import Failure, failure_of, run_with_retries

log = structlog.get_logger("gearworker.worker")

T = PacketType
_GRAB = encode_request(T.GRAB_JOB_UNIQ)
_PRE_SLEEP = encode_request(T.PRE_SLEEP)
_REPORT_TYPES = {"status": T.WORK_STATUS, "data": T.WORK_DATA, "warning": T.WORK_WARNING}


@dataclass(slots=True, eq=False)
class Function:
    """A function name we serve, with its handler and the limits it counts against."""

    name: str
    wire: bytes
    handler: Handler
    buckets: tuple[Bucket, ...]


@dataclass(slots=True, eq=False)
class Group:
    """Functions that count against the same limits, served on their own connections."""

    name: str
    buckets: tuple[Bucket, ...]
    register: bytes  # CAN_DO / CAN_DO_TIMEOUT packets for every function of the group
    functions: list[str] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Session:
    """The worker's state on one connection to one job server."""

    link: Link
    group: Group
    stream: PacketStream | None = None
    grabs: int = 0
    sleeping: bool = False
    drained: bool = False  # saw NO_JOB: grab no more until NOOP
    running: dict[bytes, RunningJob] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class RunningJob:
    """A job we started; also the reporter its :class:`Job` calls."""

    worker: Worker
    function: Function
    handle: bytes
    unique: bytes
    session: Session
    stream: PacketStream  # the connection it came on: results go back there only
    token: int
    started: float
    info: JobInfo
    task: asyncio.Task[None] | None = None
    attempts: int = 1  # attempts made so far

    def __call__(self, kind: str, *args: bytes) -> None:
        self.worker.report(self, kind, args)


class Worker:
    """Takes jobs from all configured servers and runs them."""

    def __init__(self, settings: Settings, registry: Registry, pool: Pool | None, *, metrics: Any = None,
                 middleware: Chain | None = None) -> None:
        self.settings = settings
        # Logging and metrics of each job are middlewares like any other.
        self.middleware = middleware if middleware is not None else build_middleware([], [], metrics=metrics)
        self.registry = registry
        self.pool = pool
        self.metrics = metrics
        self.sessions: dict[Link, Session] = {}
        self.draining = False
        self.idle = asyncio.Event()
        self.idle.set()
        self.running = 0
        self.first_connection = asyncio.Event()
        self._jobs: dict[int, RunningJob] = {}
        self._tokens = itertools.count(1)
        #: SET_CLIENT_ID of every connection: gearadmin --workers shows it, and
        #: the scheduler's election compares it (gearworker.schedule).
        self.client_id = (settings.client_id or socket.gethostname()) + f"-{os.getpid()}"
        self._fail_with_exception = settings.failure_style == "exception"
        self._global = Bucket("concurrency", settings.concurrency)
        self._loop = asyncio.get_running_loop()
        self._functions, self.groups = self._build_functions()
        self._session_list: list[Session] = []
        self._rotation = 0

    # -- set-up -------------------------------------------------------------
    def _build_functions(self) -> tuple[dict[bytes, Function], list[Group]]:
        s = self.settings
        pool_bucket = Bucket("pool", self.pool.size) if self.pool is not None else None
        per_handler: dict[str, Bucket] = {}
        for name, h in self.registry.handlers.items():
            limit = s.handler_concurrency.get(name, h.concurrency)
            if limit is not None:
                per_handler[name] = Bucket(f"handler:{name}", limit)
        functions: dict[bytes, Function] = {}
        groups: dict[tuple[int, ...], Group] = {}
        for name, h in sorted(self.registry.functions.items()):
            buckets = [self._global]
            if h.name in per_handler:
                buckets.append(per_handler[h.name])
            if h.cpu:
                if pool_bucket is None:
                    raise RuntimeError("a cpu=True handler needs the process pool")
                buckets.append(pool_bucket)
            wire = name.encode()
            function = functions[wire] = Function(name, wire, h, tuple(buckets))
            key = tuple(id(b) for b in buckets)
            group = groups.get(key)
            if group is None:
                group = groups[key] = Group("+".join(b.name for b in buckets), function.buckets, b"")
            group.functions.append(name)
            group.register += self._can_do(wire, h)
        return functions, list(groups.values())

    def _can_do(self, wire: bytes, h: Handler) -> bytes:
        if h.timeout is None:
            return encode_request(T.CAN_DO, wire)
        # Our own timeout fires first and fails the job.  gearmand's is only a
        # backstop for a worker that hangs entirely: measured on 1.1.20, the value
        # is milliseconds (anything under 1000 acts as about 1 s) and on expiry
        # gearmand re-queues the job rather than failing it as PROTOCOL says.
        # With retries, every attempt and the waits between them run before the
        # job ends: gearmand's backstop must cover them all.
        ms = int((h.retry.budget(h.timeout) + self.settings.timeout_margin) * 1000)
        return encode_request(T.CAN_DO_TIMEOUT, wire, str(ms).encode())

    def start(self) -> None:
        """Open a link to every configured server (they connect in the background)."""
        s = self.settings
        for host, port in s.addresses():
            for group in self.groups:
                link = Link(
                    host,
                    port,
                    self,
                    max_packet_size=s.max_packet_size,
                    connect_timeout=s.connect_timeout,
                    backoff=Backoff(s.reconnect_min, s.reconnect_max),
                )
                self.sessions[link] = Session(link, group)
                link.start()
        self._session_list = list(self.sessions.values())

    @property
    def connected(self) -> int:
        """How many servers we have at least one live connection to."""
        return len({s.link.name for s in self.sessions.values() if s.stream is not None})

    # -- LinkOwner: connections come and go ---------------------------------
    def link_up(self, link: Link, stream: PacketStream) -> None:
        if self.draining:
            link.close()  # a connection made just as we began to drain: leave for good
            return
        session = self.sessions[link]
        session.stream = stream
        session.sleeping = session.drained = False
        # A new connection knows nothing of us: identify and register again
        # (CAN_DO after every reconnect).
        stream.send(encode_request(T.SET_CLIENT_ID, self.client_id.encode()) + session.group.register)
        self._report_server(link.name)
        if link.reconnects:
            self._metric("reconnect", link.name)
        self.first_connection.set()
        self.pump(session)

    def link_down(self, link: Link, reason: Exception | None) -> None:
        session = self.sessions[link]
        session.stream = None
        # Outstanding grabs will never be answered: free what they reserved.
        for bucket in session.group.buckets:
            bucket.reserved -= session.grabs
        session.grabs = 0
        # Jobs still running from this connection were re-queued by gearmand,
        # under the same handles, and may come back on the next connection while
        # these copies run on; their results will be dropped (see _finish).
        session.running = {}
        self._report_server(link.name)
        self.pump_all()

    def _report_server(self, server: str) -> None:
        """A server is "connected" while any of its connections (one per group) is up."""
        up = any(s.stream is not None for s in self._session_list if s.link.name == server)
        self._metric("set_connection", server, "connected" if up else "down")

    # -- packets from a server ----------------------------------------------
    def on_packet(self, link: Link, packet: Packet) -> None:
        session = self.sessions[link]
        t = packet.type
        if t is T.JOB_ASSIGN_UNIQ:
            handle, function, unique, data = packet.args
            self._assigned(session, handle, function, unique, data)
        elif t is T.NO_JOB:
            if self._answered(session):
                session.drained = True
                if not session.grabs and session.stream is not None and session.stream.is_open and not self.draining:
                    session.stream.send(_PRE_SLEEP)
                    session.sleeping = True
                # The answered grab held a place that another server's connection,
                # blocked by a full limit, may now use.
                self.pump_all()
        elif t is T.NOOP:
            session.sleeping = session.drained = False
            # Wake with one grab; the job it brings refills the pipeline.  A full
            # pipeline here costs gearmand a NO_JOB per extra grab before the
            # worker sees the job (measured p50 of a lone job: 165 us with 8
            # grabs, 216 us with 32).
            self.pump(session, depth=1)
        elif t is T.ERROR:
            code, text = packet.args
            log.warning("server.error", server=link.name, code=code.decode(errors="replace"),
                        text=text.decode(errors="replace"))
        elif t in (T.JOB_ASSIGN, T.JOB_ASSIGN_ALL):
            handle, function, *rest = packet.args
            self._assigned(session, handle, function, rest[0] if t is T.JOB_ASSIGN_ALL else b"", rest[-1])
        elif t in (T.ECHO_RES, T.OPTION_RES):
            pass
        else:
            self._violation(session, f"unexpected {t.name} sent to a worker")

    def _violation(self, session: Session, message: str) -> None:
        log.error("server.protocol_error", server=session.link.name, error=message)
        session.link.reset(RemoteProtocolError(message))

    def _answered(self, session: Session) -> bool:
        if not session.grabs:
            self._violation(session, "job or NO_JOB without an outstanding GRAB_JOB")
            return False
        session.grabs -= 1
        for bucket in session.group.buckets:
            bucket.reserved -= 1
        return True

    def _assigned(self, session: Session, handle: bytes, wire: bytes, unique: bytes, data: bytes) -> None:
        if not self._answered(session):
            return
        # A job answering a later grab means the NO_JOB we saw earlier is stale:
        # grab again.  Without this, a pipeline whose last answer is a job ends
        # with no grab outstanding and no PRE_SLEEP sent, so gearmand never wakes
        # us (measured: the echo bench stalled with 336 jobs queued, 0 running).
        session.drained = False
        stream = session.stream
        assert stream is not None
        function = self._functions.get(wire)
        if function is None:
            # gearmand never does this; a confused server might.  End the job
            # clearly rather than leave it running forever.
            log.error("job.unknown_function", server=session.link.name, function=wire.decode(errors="replace"),
                      handle=handle.decode(errors="replace"))
            stream.send(self._failure_packets(handle, f"no handler for function {wire!r} on this worker"))
            self.pump(session)
            return
        if self.draining:
            return  # not started: handed back when this connection closes
        self._start(session, stream, function, handle, unique, data)
        self.pump(session)

    # -- keeping grabs in flight --------------------------------------------
    def pump(self, session: Session, depth: int = 0) -> None:
        """Keep up to ``depth`` (default ``grab_pipeline``) grabs in flight on ``session`` while its group has room."""
        stream = session.stream
        # is_open, not "is not None": between a connection's loss and the Link's
        # link_down() call (one loop turn) the stream is set but closed.
        if stream is None or not stream.is_open or self.draining or session.sleeping or session.drained:
            return
        buckets = session.group.buckets
        depth = depth or self.settings.grab_pipeline
        while session.grabs < depth and all(b.free > 0 for b in buckets):
            # Each outstanding grab may come back with a job: hold a place for it.
            for bucket in buckets:
                bucket.reserved += 1
            session.grabs += 1
            stream.send(_GRAB)

    def pump_all(self) -> None:
        """Offer free capacity to every connection, starting one further each time.

        Rotating the start keeps a low ``concurrency`` shared among servers
        instead of always going to the first one.
        """
        sessions = self._session_list
        if not sessions:
            return
        self._rotation = start = (self._rotation + 1) % len(sessions)
        for i in range(len(sessions)):
            self.pump(sessions[(start + i) % len(sessions)])

    # -- running jobs -------------------------------------------------------
    def _start(self, session: Session, stream: PacketStream, function: Function, handle: bytes, unique: bytes,
               data: bytes) -> None:
        for bucket in function.buckets:
            bucket.used += 1
        info = JobInfo(function.name, handle, unique, len(data), session.link.name, function.handler.retry.attempts,
                       data)
        job = RunningJob(self, function, handle, unique, session, stream, next(self._tokens), time.monotonic(), info)
        session.running[handle] = job
        self._jobs[job.token] = job
        self.running += 1
        self.idle.clear()
        self.middleware.before(info)
        # loop.create_task, not asyncio.create_task: the latter looks the loop up
        # again, which costs a getpid() system call per job.
        if function.handler.cpu:
            job.task = self._loop.create_task(self._run_cpu(job, data))
        else:
            job.task = self._loop.create_task(self._run_async(job, data))

    async def _run_async(self, job: RunningJob, data: bytes) -> None:
        api = Job(job.function.name, job.handle, job.unique, data, job)
        try:
            result = await self._attempts(job, lambda n: self._attempt_async(job, api))
        except asyncio.CancelledError:
            self._finish(job, b"", "handed_back")  # shutdown: gearmand re-queues it
            raise
        self._end(job, result)

    async def _attempt_async(self, job: RunningJob, api: Job) -> bytes | Failure:
        """Run an async handler once: its result, or the failure (an exception, the timeout)."""
        h = job.function.handler
        started = time.monotonic()
        try:
            if h.timeout is None:
                result = await h.func(api)
            else:
                try:
                    async with asyncio.timeout(h.timeout):
                        result = await h.func(api)
                except TimeoutError:
                    if time.monotonic() - started >= h.timeout:
                        return Failure("timeout", f"JobTimeout: ran past its {h.timeout:g}s timeout")
                    raise
            return to_bytes(result)
        except asyncio.CancelledError:
            if _cancelled_by_us():
                raise
            # The handler awaited something that someone else cancelled: that is
            # the handler's failure, and the job must still end.
            return Failure("fail", "CancelledError: an awaited operation was cancelled")
        except Exception as e:
            return failure_of(e)

    async def _attempts(self, job: RunningJob, attempt: Any) -> bytes | Failure:
        """Run ``attempt`` as often as the handler's ``retries`` allow (see :mod:`gearworker.retry`)."""
        policy = job.function.handler.retry
        if not policy.retries:  # the common case: no retry machinery per job
            result: bytes | Failure = await attempt(1)
            if isinstance(result, Failure):
                self.middleware.on_failure(job.info, result, 1, True)
            return result
        result, job.attempts = await run_with_retries(
            attempt, policy,
            warn=lambda text: self.report(job, "warning", (text.encode(),)),
            on_failure=lambda failure, n, final: self.middleware.on_failure(job.info, failure, n, final))
        return result

    def _end(self, job: RunningJob, result: bytes | Failure) -> None:
        if isinstance(result, Failure):
            self._fail(job, result.outcome, result.message)
        else:
            self._finish(job, encode_request(T.WORK_COMPLETE, job.handle, result), "complete")

    async def _run_cpu(self, job: RunningJob, data: bytes) -> None:
        spec = CpuJobSpec(job.token, job.function.name, job.handle, job.unique, data)
        try:
            result = await self._attempts(job, lambda n: self._attempt_cpu(job, spec))
        except asyncio.CancelledError:
            self._finish(job, b"", "handed_back")
            raise
        self._end(job, result)

    async def _attempt_cpu(self, job: RunningJob, spec: CpuJobSpec) -> bytes | Failure:
        """Run a ``cpu=True`` handler once in the pool: its result, or the failure."""
        assert self.pool is not None
        h = job.function.handler
        timeout = h.timeout
        started = time.monotonic()
        for run in (1, 2):
            try:
                outcome = await self.pool.run(h.func, spec, timeout)
                break
            except PoolTimeout as e:
                return Failure("timeout", f"JobTimeout: {e}")
            except ChildDied as e:
                # A pool process killed from outside (the OOM killer, an operator)
                # says nothing about the job: run it once more in a fresh process,
                # or a background job would be lost.  A handler that kills its
                # process every time (os._exit, a segfault) fails on the second try.
                if run == 2:
                    return Failure("crash", f"ChildDied: {e} (twice)")
                if h.timeout is not None:  # the rerun gets what is left, so gearmand's backstop never fires first
                    timeout = h.timeout - (time.monotonic() - started)
                    if timeout <= 0:
                        return Failure("timeout", f"JobTimeout: ran past its {h.timeout:g}s timeout; {e}")
                log.warning("job.retry", function=job.function.name, handle=job.handle.decode(errors="replace"),
                            unique=job.unique.decode(errors="replace"), reason=str(e))
            except Exception as e:  # the pool itself failed (e.g. the job cannot be pickled): still end the job
                return Failure("crash", f"{type(e).__name__}: {e}", retryable=False)
        ok, payload = outcome
        if ok:
            return payload
        return Failure("fail", payload.decode(errors="replace"), outcome.retryable)

    def _failure_packets(self, handle: bytes, message: str) -> bytes:
        text = message.encode()
        if self._fail_with_exception:
            return encode_request(T.WORK_EXCEPTION, handle, text)
        # gearmand 1.1.20 turns WORK_EXCEPTION into a malformed WORK_FAIL for
        # clients that did not ask for exceptions (Perl's client dies, the gearman
        # CLI hangs).  A warning carrying the message, then a plain WORK_FAIL,
        # is understood by every client.
        return encode_request(T.WORK_WARNING, handle, text) + encode_request(T.WORK_FAIL, handle)

    def _fail(self, job: RunningJob, outcome: str, message: str) -> None:
        self._finish(job, self._failure_packets(job.handle, message), outcome, error=message)

    def report(self, job: RunningJob, kind: str, args: tuple[bytes, ...]) -> None:
        """Forward a WORK_STATUS / WORK_DATA / WORK_WARNING of a running job."""
        if job.stream is job.session.stream and job.stream.is_open and job.session.running.get(job.handle) is job:
            job.stream.send(encode_request(_REPORT_TYPES[kind], job.handle, *args))

    def pool_report(self, token: int, kind: str, args: tuple[bytes, ...]) -> None:
        """A report sent from inside a pool process."""
        job = self._jobs.get(token)
        if job is not None:
            self.report(job, kind, args)

    def _finish(self, job: RunningJob, packets: bytes, outcome: str, *, error: str | None = None) -> None:
        session = job.session
        for bucket in job.function.buckets:
            bucket.used -= 1
        if session.running.get(job.handle) is job:  # not a newer copy of the same handle
            del session.running[job.handle]
        del self._jobs[job.token]
        self.running -= 1
        if packets:
            if job.stream is session.stream and job.stream.is_open:
                job.stream.send(packets)
            else:
                # The connection it came on dropped; gearmand re-queued the job
                # and will give it to a worker again (at-least-once delivery).
                outcome = "handed_back"
        # The job.done log line, metrics and failed-job records: see gearworker.middleware.
        self.middleware.after(job.info, JobResult(outcome, time.monotonic() - job.started, error, job.attempts))
        if self.draining:
            if not session.running:
                session.link.close()  # hands back anything assigned but not started
        else:
            self.pump_all()
        if not self.running:
            self.idle.set()

    # -- shutdown -----------------------------------------------------------
    def stop_taking_jobs(self) -> None:
        """Take no new job; close connections that have nothing running."""
        self.draining = True
        for session in self.sessions.values():
            # No RESET_ABILITIES: gearmand would re-queue the jobs still running
            # here.  Connections with running jobs stay open to report results
            # and simply grab no more; the rest close now, for good.
            if not session.running:
                session.link.close()

    def abandon(self) -> int:
        """Cancel every running job (past the grace period); they are handed back."""
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def close(self) -> None:
        """Close every connection and stop reconnecting."""
        await asyncio.gather(*(link.stop() for link in self.sessions))

    def _metric(self, name: str, *args: Any) -> None:
        if self.metrics is not None:
            getattr(self.metrics, name)(*args)


def _cancelled_by_us() -> bool:
    """True when the running task itself was cancelled (shutdown), not merely something it awaited."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
