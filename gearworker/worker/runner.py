"""Running one job: the handler call, its timeout, its outcome and the packets that end it.

The :class:`Runner` starts each job as a task (on the event loop for async
handlers, in the process pool for ``cpu=True`` ones), turns whatever happens
into exactly one ending (WORK_COMPLETE, or a failure), and tells the worker
that the job's places in its limits are free again.

A handler with ``retries`` runs again after a failed attempt
(:mod:`gearworker.worker.retry`), and the middlewares (:mod:`gearworker.middleware`:
the ``job.done`` log line, metrics, failed-job records, the user's) hear of
the start, each failed attempt and the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import structlog

from ..middleware import Failure, JobInfo, JobResult
from ..payload import to_bytes
from ..protocol import JobAssigned, WorkerSession
from .capacity import Function
from .chain import Chain, CompletedHooks
from .eager import start_eagerly
from .job import CpuJob, CpuJobSpec, Job
from .pool import ChildDied, Pool, PoolTimeout
from .retry import failure_of, run_with_retries
from .threads import ThreadsLeft, run_in_thread, thread_job

if TYPE_CHECKING:
    from ..transport import PacketStream

__all__ = ["ActiveJob", "Runner"]

log = structlog.get_logger("gearworker.worker")


class JobSource(Protocol):
    """The connection a job came on, as the Runner sees it (the worker's GroupConnection)."""

    @property
    def name(self) -> str: ...

    @property
    def stream(self) -> PacketStream | None: ...

    @property
    def session(self) -> WorkerSession[ActiveJob]: ...


@dataclass(slots=True, eq=False)
class ActiveJob:
    """A job this worker is running; also the reporter its :class:`Job` calls."""

    function: Function
    handle: bytes
    unique: bytes
    conn: JobSource
    stream: PacketStream  # the connection it came on: its results go back there only
    token: int
    started: float
    data: bytes  # the workload
    task: asyncio.Task[None] | None = None
    abandoned: bool = False  # its connection dropped before it ended
    attempts: int = 1  # attempts made so far
    _info: JobInfo | None = None

    @property
    def info(self) -> JobInfo:
        """The job as middlewares see it; made on first use (a job no middleware looks at costs nothing)."""
        if self._info is None:
            self._info = JobInfo(
                self.function.name,
                self.handle,
                self.unique,
                len(self.data),
                self.conn.name,
                self.function.handler.retry.attempts,
                self.data,
            )
        return self._info

    def __call__(self, kind: str, args: tuple[bytes, ...]) -> None:
        """Forward a WORK_STATUS / WORK_DATA / WORK_WARNING, while the connection it came on lasts."""
        conn = self.conn
        if conn.stream is self.stream and self.stream.is_open and conn.session.holds(self.handle, self):
            self.stream.send(conn.session.report(self.handle, kind, *args))


class Runner:
    """Runs jobs and ends each exactly once; ``on_end`` frees the job's places in the worker's limits."""

    def __init__(
        self,
        pool: Pool | None,
        middleware: Chain,
        *,
        exception_style: bool,
        on_end: Callable[[ActiveJob], None],
        on_thread: Callable[[Function, int], None],
    ) -> None:
        self.pool = pool
        self.middleware = middleware
        self._exception_style = exception_style
        self._on_end = on_end
        #: Threads still running past their job; each keeps its places in the limits (on_thread) until it returns.
        self._threads_left = ThreadsLeft(on_thread)
        self._loop = asyncio.get_running_loop()
        self._tokens = 0
        #: Jobs waiting out a retry's backoff (nothing of theirs runs): shutdown hands them back at once.
        self._backing_off: set[ActiveJob] = set()
        self._handing_back = False
        #: Completed jobs' after-hooks, waiting for their batch (the worker runs what is left at shutdown).
        self.completed_hooks = CompletedHooks(middleware)

    def start(self, conn: JobSource, function: Function, assigned: JobAssigned) -> ActiveJob:
        """Start ``assigned`` (its places in the limits are already taken)."""
        assert conn.stream is not None
        self._tokens += 1
        job = ActiveJob(
            function, assigned.handle, assigned.unique, conn, conn.stream, self._tokens, time.monotonic(), assigned.data
        )
        conn.session.attach(assigned.handle, job)
        if function.max_tick_age is not None and self._stale_tick(job, function.max_tick_age):
            return job
        if self.middleware.has_before:
            self.middleware.before(job.info)
        # loop.create_task, not asyncio.create_task: the latter looks the loop up
        # again, which costs a getpid() system call per job.
        if function.handler.cpu:
            job.task = self._loop.create_task(self._run_cpu(job, assigned.data))
        else:
            # Eagerly: the handler runs now, inside the read that brought the job (and inside
            # its Task), and one that finishes without waiting has its result written by the read.
            # Lone no-op jobs: one write fewer per job (11.2 -> 10.2 system calls, bench.syscalls).
            job.task = start_eagerly(self._loop, self._run_async(job, assigned.data))
        return job

    def _stale_tick(self, job: ActiveJob, max_age: float) -> bool:
        """A schedule's tick (unique id ``sched:<function>:<tick>``) older than ``max_age``: end it unrun.

        Such a tick ran elsewhere or was given up: a gearmand that hung with
        the submit in its buffers hands it out when it resumes, long after the
        scheduler resubmitted the tick to another server (docs/jobs.md).
        """
        prefix, _, tick = job.unique.rpartition(b":")
        if not prefix.startswith(b"sched:") or not tick.isdigit():
            return False  # submitted by someone else: runs as any job
        age = time.time() - int(tick)
        if age <= max_age:
            return False
        log.warning(
            "schedule.tick_dropped",
            function=job.function.name,
            tick=int(tick),
            age=round(age, 1),
            max_age=max_age,
            handle=job.handle.decode(errors="replace"),
            server=job.conn.name,
        )
        job.stream.send(job.conn.session.complete(job.handle, b""))
        self._on_end(job)
        return True

    async def _run_async(self, job: ActiveJob, data: bytes) -> None:
        api: Job | CpuJob
        if job.function.handler.is_async:
            api = Job(job.function.name, job.handle, job.unique, data, job)
        else:  # a plain def without cpu=True: in a thread (gearworker.worker.threads)
            api = thread_job(job.function.name, job.handle, job.unique, data, job)
        try:
            if job.function.handler.retry.retries:
                result = await self._attempts(job, lambda n: self._attempt_async(job, api))
            else:  # the common case, without a closure and a coroutine more per job
                result = await self._attempt_async(job, api)
                if isinstance(result, Failure):
                    await self._failed(job, result, 1)
        except asyncio.CancelledError:
            # Shutdown, or its connection dropped: gearmand re-queues it.
            self.finish(job, None, "abandoned" if job.abandoned else "handed_back")
            raise
        if isinstance(result, Failure):  # _end(), inlined: this is on every async job's way to its result
            self.fail(job, result.outcome, result.message)
        else:
            self.finish(job, result, "complete")

    async def _attempt_async(self, job: ActiveJob, api: Job | CpuJob) -> bytes | Failure:
        """Run an async (or thread) handler once: its result, or the failure (an exception, the timeout)."""
        h = job.function.handler
        try:
            if h.timeout is None:
                result = await (h.func(api) if h.is_async else self._in_thread(job, cast(CpuJob, api)))
            else:
                # expired(), not a clock comparison: the deadline is on the loop's
                # clock, which uvloop caches, so time.monotonic() can say a little
                # less than the timeout when it fires.
                deadline = asyncio.timeout(h.timeout)
                try:
                    async with deadline:
                        result = await (h.func(api) if h.is_async else self._in_thread(job, cast(CpuJob, api)))
                except TimeoutError:
                    if deadline.expired():
                        return Failure("timeout", f"JobTimeout: ran past its {h.timeout:g}s timeout")
                    raise
            if type(result) is bytes:  # the common results take no call
                return result
            return b"" if result is None else to_bytes(result)
        except asyncio.CancelledError:
            if _cancelled_by_us():
                raise
            # The handler awaited something that someone else cancelled: that is
            # the handler's failure, and the job must still end.
            return Failure("fail", "CancelledError: an awaited operation was cancelled")
        except GeneratorExit:
            raise  # the coroutine itself is being closed: no handler's failure
        except BaseException as e:
            # SystemExit, KeyboardInterrupt and the like fail the job as any exception does.  Let out of
            # the job's Task, asyncio would re-raise them out of the event loop and stop the worker.
            return failure_of(e)

    def _in_thread(self, job: ActiveJob, api: CpuJob) -> asyncio.Future[object]:
        """Run a thread handler's attempt (see :mod:`gearworker.worker.threads`)."""
        return run_in_thread(
            job.function.handler.func, api, lambda: self._threads_left.add(job.function, job.handle, job.unique)
        )

    async def _attempts(self, job: ActiveJob, attempt: Callable[[int], Awaitable[bytes | Failure]]) -> bytes | Failure:
        """Run ``attempt`` as often as the handler's ``retries`` allow (see :mod:`gearworker.worker.retry`)."""
        result, job.attempts = await run_with_retries(
            attempt,
            job.function.handler.retry,
            warn=lambda text: job("warning", (text.encode(),)),
            on_failure=lambda failure, n, final: self.middleware.on_failure(job.info, failure, n, final),
            sleep=lambda delay: self._backoff(job, delay),
        )
        if isinstance(result, Failure) and self.middleware.has_final_hooks and not job.abandoned:
            await self.middleware.before_final_failure(job.info)  # gearmand still holds the job here
        return result

    async def _backoff(self, job: ActiveJob, delay: float) -> None:
        """Wait before a retry, unless the worker is shutting down: then hand the job back now.

        A job that only waits holds nothing worth the grace period: gearmand
        gives it to another worker, which starts it from its first attempt.
        """
        if self._handing_back:
            raise asyncio.CancelledError  # the job's task ends as handed back, like a cancel at shutdown
        self._backing_off.add(job)
        try:
            await asyncio.sleep(delay)
        finally:
            self._backing_off.discard(job)

    def hand_back_retries(self) -> int:
        """Shutdown: end every job waiting for a retry as handed back, and every one that would wait later."""
        self._handing_back = True
        waiting = [job.task for job in self._backing_off if job.task is not None]
        for task in waiting:
            task.cancel()
        return len(waiting)

    async def _failed(self, job: ActiveJob, failure: Failure, attempt: int) -> None:
        """The only attempt of a job without retries failed: tell the middlewares."""
        self.middleware.on_failure(job.info, failure, attempt, True)
        # (An abandoned job's connection is gone: gearmand re-queued it, it is no failure to record.)
        if self.middleware.has_final_hooks and not job.abandoned:
            await self.middleware.before_final_failure(job.info)  # gearmand still holds the job here

    def _end(self, job: ActiveJob, result: bytes | Failure) -> None:
        if isinstance(result, Failure):
            self.fail(job, result.outcome, result.message)
        else:
            self.finish(job, result, "complete")

    async def _run_cpu(self, job: ActiveJob, data: bytes) -> None:
        spec = CpuJobSpec(job.token, job.function.name, job.handle, job.unique, data)
        try:
            if job.function.handler.retry.retries:
                result = await self._attempts(job, lambda n: self._attempt_cpu(job, spec))
            else:
                result = await self._attempt_cpu(job, spec)
                if isinstance(result, Failure):
                    await self._failed(job, result, 1)
        except asyncio.CancelledError:  # the pool killed its process
            self.finish(job, None, "abandoned" if job.abandoned else "handed_back")
            raise
        self._end(job, result)

    async def _attempt_cpu(self, job: ActiveJob, spec: CpuJobSpec) -> bytes | Failure:
        """Run a ``cpu=True`` handler once in the pool: its result, or the failure."""
        assert self.pool is not None
        h = job.function.handler
        timeout = h.timeout
        started = time.monotonic()
        for run in (1, 2):
            try:
                outcome = await self.pool.run(h.func, spec, timeout, job)
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
                log.warning(
                    "job.retry",
                    function=job.function.name,
                    handle=job.handle.decode(errors="replace"),
                    unique=job.unique.decode(errors="replace"),
                    reason=str(e),
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the pool itself failed (e.g. the job cannot be pickled): still end the job
                return Failure("crash", f"{type(e).__name__}: {e}", retryable=False)
        ok, payload = outcome
        if ok:
            return payload
        return Failure("fail", payload.decode(errors="replace"), outcome.retryable)

    def fail(self, job: ActiveJob, outcome: str, message: str) -> None:
        """End ``job`` as failed with ``message`` (the client sees it)."""
        self.finish(job, message.encode(), outcome, error=message)

    def finish(self, job: ActiveJob, data: bytes | None, outcome: str, *, error: str | None = None) -> None:
        """End ``job``: send its result (``data`` for "complete", else the failure message; None: nothing)."""
        conn = job.conn
        session = conn.session
        held = session.holds(job.handle, job)
        if data is not None and held and conn.stream is job.stream and job.stream.is_open:
            if error is None:
                job.stream.send_result(session.complete(job.handle, data))
            else:
                # Not at once: a failure's hooks (a failed-job record) run before gearmand hears of it.
                job.stream.send(session.fail(job.handle, data, exception=self._exception_style))
        else:
            if held:
                session.forget(job.handle)  # handed back: gearmand re-queues it when the connection closes
            if data is not None:
                # The connection it came on dropped; gearmand re-queued the job
                # and will give it to a worker again (at-least-once delivery).
                outcome = "handed_back"
        # The job.done log line, metrics and failed-job records: see gearworker.middleware.
        mw = self.middleware
        if outcome != "complete":
            mw.after(job.info, JobResult(outcome, time.monotonic() - job.started, error, job.attempts, time.time()))
        elif mw.has_after_complete:  # (with logging at warning and no metrics, nothing is done)
            # In a batch, after the result was written (see CompletedHooks).
            self.completed_hooks.add(
                job, (job.function.name, job.handle, job.unique, time.monotonic() - job.started, time.time())
            )
        self._on_end(job)


def _cancelled_by_us() -> bool:
    """True when the running task itself was cancelled (shutdown), not merely something it awaited."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
