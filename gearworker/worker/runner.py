"""Running one job: the handler call, its timeout, its outcome and the packets that end it.

The :class:`Runner` starts each job as a task (on the event loop for async
handlers, in the process pool for ``cpu=True`` ones), turns whatever happens
into exactly one ending (WORK_COMPLETE, or a failure), logs it and tells the
worker that the job's places in its limits are free again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from ..metrics import MetricsSink, NullMetrics
from ..payload import to_bytes
from ..protocol import JobAssigned
from .eager import NEEDS_TASK_FOR_TIMEOUT, start_eagerly
from .job import CpuJobSpec, Job
from .pool import ChildDied, Pool, PoolTimeout

if TYPE_CHECKING:
    from ..transport import PacketStream
    from .worker import Connection, Function

__all__ = ["ActiveJob", "Runner"]

log = structlog.get_logger("gearworker.worker")


@dataclass(slots=True, eq=False)
class ActiveJob:
    """A job this worker is running; also the reporter its :class:`Job` calls."""

    function: Function
    handle: bytes
    unique: bytes
    conn: Connection
    stream: PacketStream  # the connection it came on: its results go back there only
    token: int
    started: float
    task: asyncio.Task[None] | None = None
    abandoned: bool = False  # its connection dropped before it ended

    def __call__(self, kind: str, args: tuple[bytes, ...]) -> None:
        """Forward a WORK_STATUS / WORK_DATA / WORK_WARNING, while the connection it came on lasts."""
        conn = self.conn
        if conn.stream is self.stream and self.stream.is_open and conn.session.holds(self.handle, self):
            self.stream.send(conn.session.report(self.handle, kind, *args))


class Runner:
    """Runs jobs and ends each exactly once; ``on_end`` frees the job's places in the worker's limits."""

    def __init__(self, pool: Pool | None, metrics: MetricsSink, *, exception_style: bool,
                 on_end: Callable[[ActiveJob], None]) -> None:
        self.pool = pool
        # None when nothing records: two calls of a no-op sink cost about 0.2 us of every job.
        self._job_metrics = None if isinstance(metrics, NullMetrics) else metrics
        self._exception_style = exception_style
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._tokens = 0
        self._log_each_job = log.is_enabled_for(logging.INFO)  # logging is configured before the worker is built
        # The logger itself, resolved once: every call through the module's lazy proxy costs a
        # __getattr__ and a bind() (~1 us of a ~4.5 us job.done line, python -m bench.logcost).
        self._log = log.bind()

    def start(self, conn: Connection, function: Function, assigned: JobAssigned) -> ActiveJob:
        """Start ``assigned`` (its places in the limits are already taken)."""
        assert conn.stream is not None
        self._tokens += 1
        job = ActiveJob(function, assigned.handle, assigned.unique, conn, conn.stream, self._tokens,
                        time.monotonic())
        conn.session.attach(assigned.handle, job)
        if self._job_metrics is not None:
            self._job_metrics.job_started(function.name)
        # loop.create_task, not asyncio.create_task: the latter looks the loop up
        # again, which costs a getpid() system call per job.
        if function.handler.cpu:
            job.task = self._loop.create_task(self._run_cpu(job, assigned.data))
        elif function.handler.timeout is not None and NEEDS_TASK_FOR_TIMEOUT:
            job.task = self._loop.create_task(self._run_async(job, assigned.data))
        else:
            # Eagerly: the handler runs now, inside the read that brought the job, and one that
            # finishes without waiting needs no Task; its result goes out with this read's grabs.
            # Lone no-op jobs: one write fewer per job (11.2 -> 10.2 system calls, bench.syscalls).
            job.task = start_eagerly(self._loop, self._run_async(job, assigned.data))
        return job

    async def _run_async(self, job: ActiveJob, data: bytes) -> None:
        h = job.function.handler
        api = Job(job.function.name, job.handle, job.unique, data, job)
        try:
            if h.timeout is None:
                result = await h.func(api)
            else:
                try:
                    async with asyncio.timeout(h.timeout):
                        result = await h.func(api)
                except TimeoutError:
                    if time.monotonic() - job.started >= h.timeout:
                        self.fail(job, "timeout", f"JobTimeout: ran past its {h.timeout:g}s timeout")
                        return
                    raise
            payload = to_bytes(result)
        except asyncio.CancelledError:
            if _cancelled_by_us():
                # Shutdown, or its connection dropped: gearmand re-queues it.
                self.finish(job, None, "abandoned" if job.abandoned else "handed_back")
                raise
            # The handler awaited something that someone else cancelled: that is
            # the handler's failure, and the job must still end.
            self.fail(job, "fail", "CancelledError: an awaited operation was cancelled")
            return
        except Exception as e:
            self.fail(job, "fail", f"{type(e).__name__}: {e}")
            return
        self.finish(job, payload, "complete")

    async def _run_cpu(self, job: ActiveJob, data: bytes) -> None:
        assert self.pool is not None
        h = job.function.handler
        spec = CpuJobSpec(job.token, job.function.name, job.handle, job.unique, data)
        timeout = h.timeout
        for attempt in (1, 2):
            try:
                ok, payload = await self.pool.run(h.func, spec, timeout, job)
                break
            except asyncio.CancelledError:  # the pool killed its process
                self.finish(job, None, "abandoned" if job.abandoned else "handed_back")
                raise
            except PoolTimeout as e:
                self.fail(job, "timeout", f"JobTimeout: {e}")
                return
            except ChildDied as e:
                # A pool process killed from outside (the OOM killer, an operator)
                # says nothing about the job: run it once more in a fresh process,
                # or a background job would be lost.  A handler that kills its
                # process every time (os._exit, a segfault) fails on the second try.
                if attempt == 2:
                    self.fail(job, "crash", f"ChildDied: {e} (twice)")
                    return
                if h.timeout is not None:  # the retry gets what is left, so gearmand's backstop never fires first
                    timeout = h.timeout - (time.monotonic() - job.started)
                    if timeout <= 0:
                        self.fail(job, "timeout", f"JobTimeout: ran past its {h.timeout:g}s timeout; {e}")
                        return
                log.warning("job.retry", function=job.function.name, handle=job.handle.decode(errors="replace"),
                            unique=job.unique.decode(errors="replace"), reason=str(e))
            except Exception as e:  # the pool itself failed (e.g. the job cannot be pickled): still end the job
                self.fail(job, "crash", f"{type(e).__name__}: {e}")
                return
        if ok:
            self.finish(job, payload, "complete")
        else:
            self.fail(job, "fail", payload.decode(errors="replace"))

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
                job.stream.send(session.complete(job.handle, data))
            else:
                job.stream.send(session.fail(job.handle, data, exception=self._exception_style))
        else:
            if held:
                session.forget(job.handle)  # handed back: gearmand re-queues it when the connection closes
            if data is not None:
                # The connection it came on dropped; gearmand re-queued the job
                # and will give it to a worker again (at-least-once delivery).
                outcome = "handed_back"
        duration = time.monotonic() - job.started
        if outcome == "complete":
            # Guarded: building these values cost ~1.8 us a job even with info
            # filtered out, a sixth of the worker's CPU per tiny job.
            if self._log_each_job:
                self._log.info("job.done", function=job.function.name, handle=job.handle.decode(errors="replace"),
                               unique=job.unique.decode(errors="replace"), duration=round(duration, 6),
                               outcome=outcome)
        else:
            self._log.warning("job.done", function=job.function.name, handle=job.handle.decode(errors="replace"),
                              unique=job.unique.decode(errors="replace"), duration=round(duration, 6),
                              outcome=outcome, error=error)
        if self._job_metrics is not None:
            self._job_metrics.job_finished(job.function.name, outcome, duration)
        self._on_end(job)


def _cancelled_by_us() -> bool:
    """True when the running task itself was cancelled (shutdown), not merely something it awaited."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
