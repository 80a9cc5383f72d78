"""Middleware: code that runs around every job (before it, after it, on each failed attempt).

A middleware is any object with some of these methods (subclass
:class:`Middleware` to get no-op defaults for the rest)::

    from gearworker.middleware import Middleware, middleware

    @middleware                       # in a handler module: used by this worker
    class SlowJobs(Middleware):
        def after(self, job, result):
            if result.duration > 10:
                log.warning("job.slow", function=job.function, duration=result.duration)

or listed in the settings, ``MIDDLEWARE = ["myapp.jobs:Audit"]`` (a class is
instantiated with no arguments; any other object is used as it is).

The hooks are plain (not async) calls made on the worker's event loop, for
async and ``cpu=True`` handlers alike (for the latter in the worker process,
around the pool call): they must not block.  Hand slow work (a database
write) to a task or a thread.  An exception in a hook is logged
(``middleware.error``) and ignored: a broken middleware must not fail jobs.
``before`` hooks run in order, ``after`` hooks in reverse order, so the first
middleware wraps all the others.

One optional hook is async: ``async def before_final_failure(self, job)`` is
awaited (for at most :data:`FINAL_HOOK_TIMEOUT` seconds) after a job's last
attempt failed and before the failure is sent to gearmand, while gearmand
still holds the job.  The failed-job recorder uses it to ask gearmand whether
a client is waiting for the job, and to write the job's record before its
failure is reported.  A middleware whose hook bounds its own waits sets
``final_hook_timeout`` (seconds, or None for no limit from the worker).

The worker's own per-job log line and Prometheus metrics are middlewares
too (:class:`gearworker.logs.jobline.LogMiddleware`,
:class:`gearworker.metrics.middleware.MetricsMiddleware`), always first.
The chain that calls them all is :class:`gearworker.worker.chain.Chain`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = [
    "FINAL_HOOK_TIMEOUT",
    "BatchRenderer",
    "CompletedLine",
    "Failure",
    "JobInfo",
    "JobResult",
    "Middleware",
    "MiddlewareProtocol",
    "middleware",
]

# structlog (and with it asyncio) is imported only where a log line is made:
# handler modules import this module through @handler, and importing
# gearworker stays light (tests/test_worker_session.py checks it).

#: The attribute :func:`middleware` sets on what it marks.
MARK = "__gearworker_middleware__"
#: Seconds a ``before_final_failure`` hook may hold a failed job's report.
FINAL_HOOK_TIMEOUT = 2.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt: ``outcome`` is "fail", "timeout" or "crash"; ``message`` is "Type: text"."""

    outcome: str
    message: str
    retryable: bool = True


@dataclass(slots=True, eq=False)
class JobInfo:
    """What a middleware knows of a job.  :attr:`state` is free for middlewares to keep per-job values in.

    One is made for every job, so it stays cheap: a plain slotted class whose
    ``state`` dict is only created when a middleware first uses it.
    """

    function: str
    handle: bytes
    unique: bytes
    size: int  # workload bytes
    server: str
    attempts: int = 1  # attempts allowed (1 + retries)
    workload: bytes = field(default=b"", repr=False)
    _state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def state(self) -> dict[str, Any]:
        """Per-job values of middlewares (created on first use)."""
        if self._state is None:
            self._state = {}
        return self._state

    # decode("utf-8", "replace"), not decode(errors="replace"): the keyword costs
    # its own parsing, ~350 instructions per job.done line (callgrind, bench.hotpath).
    @property
    def handle_text(self) -> str:
        return self.handle.decode("utf-8", "replace")

    @property
    def unique_text(self) -> str:
        return self.unique.decode("utf-8", "replace")


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~4x more, and one is made per job
class JobResult:
    """How a job ended: ``outcome`` is "complete", "fail", "timeout", "crash" or "handed_back"."""

    outcome: str
    duration: float  # seconds from the job's start to its end, every attempt and wait included
    error: str | None = None
    attempts: int = 1  # attempts made
    ended_at: float | None = None  # time.time() when it ended (a completed job's hooks may run a little later)


@runtime_checkable
class MiddlewareProtocol(Protocol):
    """What the worker calls; every method is optional when subclassing :class:`Middleware`."""

    def before(self, job: JobInfo) -> None: ...

    def after(self, job: JobInfo, result: JobResult) -> None: ...

    def on_failure(self, job: JobInfo, failure: Failure, attempt: int, final: bool) -> None: ...


class Middleware:
    """A middleware with no-op hooks: override the ones you need.

    Set ``quiet_on_complete = True`` on one whose ``after`` does nothing for
    completed jobs: the worker then skips it for them (it makes no
    :class:`JobInfo` / :class:`JobResult` for a job no middleware looks at).
    """

    quiet_on_complete = False

    def before(self, job: JobInfo) -> None:
        """Called once when the job starts (not again for each retry)."""

    def after(self, job: JobInfo, result: JobResult) -> None:
        """Called once when the job has ended, whatever the outcome.

        For a completed job, after its result was written to gearmand, in a
        batch with others up to 20 ms later (so hooks add nothing to a client's
        wait; ``result.ended_at`` says when the job ended); for a failed one,
        before the failure is sent.
        """

    def on_failure(self, job: JobInfo, failure: Failure, attempt: int, final: bool) -> None:
        """Called for each failed attempt; ``final`` is False when a retry follows."""


def middleware(obj: T) -> T:
    """Mark a class (instantiated with no arguments) or an object in a handler module as a middleware."""
    try:
        setattr(obj, MARK, True)
    except (AttributeError, TypeError) as e:
        raise TypeError(f"@middleware cannot mark {obj!r}: use a class or an object with attributes") from e
    return obj


#: A completed job's info ``job.done`` line, waiting for its batch: function, handle, unique,
#: duration in seconds, and its end as a Unix time.
CompletedLine = tuple[str, bytes, bytes, float, float]


@runtime_checkable
class BatchRenderer(Protocol):
    """A middleware that hears of completed jobs as plain values, a batch at a time.

    A middleware declares it by setting ``renders_batches = True`` and
    having these two methods.  When it is the only one whose ``after`` hears
    of completed jobs, the worker makes no :class:`JobInfo` or
    :class:`JobResult` for them and calls :meth:`completed_many` once per
    batch (the worker's own ``job.done`` line does this: 30.0k -> 21.2k
    instructions a job, cachegrind).  Every other middleware, and every
    failed job, goes through ``after`` as usual.
    """

    renders_batches: bool

    def completed(self, function: str, handle: bytes, unique: bytes, duration: float, ended_at: float | None) -> None:
        """One completed job (the same as ``after`` for it)."""

    def completed_many(self, lines: list[CompletedLine]) -> None:
        """A batch of completed jobs, in the order they ended."""
