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
a client is waiting for the job.

The worker's own per-job log line and Prometheus metrics are middlewares
too (:class:`LogMiddleware`, :class:`MetricsMiddleware`), always first.
"""

from __future__ import annotations

import datetime
import importlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, TypeVar, runtime_checkable

from .errors import ConfigError
from .retry import Failure

__all__ = [
    "FINAL_HOOK_TIMEOUT",
    "Chain",
    "JobInfo",
    "JobResult",
    "LogMiddleware",
    "MetricsMiddleware",
    "Middleware",
    "MiddlewareProtocol",
    "build",
    "load",
    "middleware",
    "middlewares_in",
]

# structlog (and with it asyncio) is imported only where a log line is made:
# handler modules import this module through @handler, and importing
# gearworker stays light (tests/test_worker_session.py checks it).

_MARK = "__gearworker_middleware__"
#: Seconds a ``before_final_failure`` hook may hold a failed job's report.
FINAL_HOOK_TIMEOUT = 2.0
T = TypeVar("T")


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
        setattr(obj, _MARK, True)
    except (AttributeError, TypeError) as e:
        raise TypeError(f"@middleware cannot mark {obj!r}: use a class or an object with attributes") from e
    return obj


def _instance(obj: Any, where: str) -> MiddlewareProtocol:
    value = obj() if isinstance(obj, type) else obj
    missing = [m for m in ("before", "after", "on_failure") if not callable(getattr(value, m, None))]
    if missing:
        raise ConfigError(
            f"middleware {where} has no {', '.join(missing)} method (subclass "
            "gearworker.middleware.Middleware for no-op defaults)",
            setting="middleware",
        )
    return value  # type: ignore[no-any-return]


def middlewares_in(module: ModuleType) -> list[MiddlewareProtocol]:
    """The objects marked with :func:`middleware` and defined in ``module``."""
    found = []
    for name, value in vars(module).items():
        # Own mark only (a subclass of a marked class is not marked), defined here (not imported).
        own = getattr(value, "__dict__", None)
        if isinstance(own, Mapping) and own.get(_MARK) is True and getattr(value, "__module__", "") == module.__name__:
            found.append(_instance(value, f"{module.__name__}.{name}"))
    return found


def load(spec: str, *, file: str | None = None) -> MiddlewareProtocol:
    """Import ``"module:attr"`` (from the ``middleware`` setting); errors name the settings file."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{spec!r} is not 'module:attribute'", file=file, setting="middleware")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:
        raise ConfigError(f"cannot import {spec!r}: {type(e).__name__}: {e}", file=file, setting="middleware") from e
    try:
        return _instance(obj, repr(spec))
    except ConfigError as e:
        raise ConfigError(e.detail, file=file, setting="middleware") from e


class Chain:
    """The middlewares of a worker, called in order; a failing hook is logged and skipped."""

    __slots__ = (
        "_after",
        "_after_complete",
        "_before",
        "_failure",
        "_final",
        "has_after_complete",
        "has_before",
        "items",
        "log_only",
    )

    def __init__(self, items: Sequence[MiddlewareProtocol]) -> None:
        self.items = list(items)
        # Only the hooks a middleware overrides are called: the no-op defaults
        # would cost a call each per job for nothing.
        self._before = [m.before for m in self.items if _overrides(m, "before")]
        self._after = [m.after for m in reversed(self.items) if _overrides(m, "after")]
        # A middleware with quiet_on_complete = True does nothing in after() for a completed job
        # (the job.done line with info logging off): the worker then makes no JobInfo/JobResult for it.
        self._after_complete = [
            m.after
            for m in reversed(self.items)
            if _overrides(m, "after") and not getattr(m, "quiet_on_complete", False)
        ]
        self.has_before = bool(self._before)
        self.has_after_complete = bool(self._after_complete)
        #: The worker's log middleware when it is the only one that hears of completed jobs (the
        #: default): the Runner then calls its completed() directly, without a JobInfo, a JobResult
        #: and this chain (the line in the worker's path: 30.0k -> 21.2k instructions, callgrind).
        self.log_only: LogMiddleware | None = None
        if len(self._after_complete) == 1:
            owner = getattr(self._after_complete[0], "__self__", None)
            if type(owner) is LogMiddleware:
                self.log_only = owner
        self._failure = [m.on_failure for m in self.items if _overrides(m, "on_failure")]
        self._final = [hook for m in self.items if callable(hook := getattr(m, "before_final_failure", None))]

    @property
    def has_final_hooks(self) -> bool:
        """True when some middleware wants :meth:`before_final_failure` awaited."""
        return bool(self._final)

    async def before_final_failure(self, job: JobInfo) -> None:
        """Await each ``before_final_failure`` hook, each for at most :data:`FINAL_HOOK_TIMEOUT` seconds."""
        import asyncio

        for hook in self._final:
            try:
                async with asyncio.timeout(FINAL_HOOK_TIMEOUT):
                    await hook(job)
            except Exception:
                _hook_failed(hook, job)

    def before(self, job: JobInfo) -> None:
        for hook in self._before:
            try:
                hook(job)
            except Exception:
                _hook_failed(hook, job)

    def after(self, job: JobInfo, result: JobResult) -> None:
        hooks = self._after_complete if result.outcome == "complete" else self._after
        for hook in hooks:
            try:
                hook(job, result)
            except Exception:
                _hook_failed(hook, job)

    def on_failure(self, job: JobInfo, failure: Failure, attempt: int, final: bool) -> None:
        for hook in self._failure:
            try:
                hook(job, failure, attempt, final)
            except Exception:
                _hook_failed(hook, job)


def _overrides(m: object, name: str) -> bool:
    return getattr(type(m), name, None) is not getattr(Middleware, name)


def _hook_failed(hook: Any, job: JobInfo) -> None:
    import structlog

    structlog.get_logger("gearworker.middleware").error(
        "middleware.error",
        hook=getattr(hook, "__qualname__", repr(hook)),
        function=job.function,
        handle=job.handle_text,
        exc_info=True,
    )


_UTC = datetime.UTC
_fromtimestamp = datetime.datetime.fromtimestamp
_now = datetime.datetime.now


def _micros(seconds: float) -> float:
    """``seconds`` to the microsecond, as ``round(seconds, 6)`` gives it.

    ``round`` with digits goes through a decimal string (``_Py_dg_dtoa`` and
    back): ~1,500 instructions of a job.done line (callgrind, bench.hotpath);
    this is a multiply, an integer round and a divide.
    """
    return round(seconds * 1_000_000) / 1_000_000


#: A completed job's info ``job.done`` line, waiting for its batch: function, handle, unique,
#: duration in seconds, and its end as a Unix time.
CompletedLine = tuple[str, bytes, bytes, float, float]


class LogMiddleware(Middleware):
    """The worker's ``job.done`` line (info when complete, warning otherwise) and ``job.retry`` warnings."""

    def __init__(self) -> None:
        import structlog

        from .logs import json_writer

        self._json_writer = json_writer
        # Bound once: each call through structlog's lazy proxy costs a __getattr__
        # and a bind() (~1 us of a job.done line, bench/logcost on the perf branch).
        self._log = log = structlog.get_logger("gearworker.worker").bind()
        # Decided once (logging is configured before the worker is built):
        # building the values of a filtered-out line cost ~1.8 us a job.
        self._info = log.is_enabled_for(logging.INFO)
        self.quiet_on_complete = not self._info

    def after(self, job: JobInfo, result: JobResult) -> None:
        # The line's timestamp is when the job ended, not when this hook runs (a completed
        # job's hooks run in a batch up to 20 ms later: gearworker.worker.runner).
        if result.outcome == "complete":
            if self._info:
                self.completed(job.function, job.handle, job.unique, result.duration, result.ended_at)
            return
        at = _fromtimestamp(result.ended_at, _UTC) if result.ended_at is not None else _now(_UTC)
        self._log.warning(
            "job.done",
            function=job.function,
            handle=job.handle_text,
            unique=job.unique_text,
            duration=_micros(result.duration),
            outcome=result.outcome,
            error=result.error,
            attempts=result.attempts,
            timestamp=at,
        )

    def completed(self, function: str, handle: bytes, unique: bytes, duration: float, ended_at: float | None) -> None:
        """The info ``job.done`` line of a completed job (``after`` calls it; so does the Runner, directly)."""
        try:
            self._log.info(
                "job.done",
                function=function,
                handle=handle.decode("utf-8", "replace"),
                unique=unique.decode("utf-8", "replace"),
                duration=_micros(duration),
                outcome="complete",
                timestamp=_fromtimestamp(ended_at, _UTC) if ended_at is not None else _now(_UTC),
            )
        except Exception:  # as for any hook (Chain): a log line that fails must not stop the others
            _hook_failed(self.completed, JobInfo(function, handle, unique, 0, ""))

    def completed_many(self, lines: list[CompletedLine]) -> None:
        """The info ``job.done`` lines of a batch of completed jobs (the Runner's batch), written together.

        The same records as :meth:`completed` one by one (a test compares
        them), built as plain dicts and rendered in one step where the log
        set-up allows it (:func:`gearworker.logs.json_writer`).
        """
        if not self._info:
            return
        write = self._json_writer(self._log)
        if write is not None:
            utc, stamp = _UTC, _fromtimestamp
            try:
                # decode() without "replace" (0.25k instructions less a line): bytes
                # that are not UTF-8 raise, and the lines go one by one below.
                write(
                    [
                        {
                            "function": function,
                            "handle": handle.decode(),
                            "unique": unique.decode(),
                            "duration": round(duration * 1_000_000) / 1_000_000,  # _micros() inline
                            "outcome": "complete",
                            "timestamp": stamp(ended_at, utc),
                            "event": "job.done",
                            "level": "info",
                        }
                        for function, handle, unique, duration, ended_at in lines
                    ]
                )
                return
            except Exception:  # e.g. a unique id that is not UTF-8: one by one below, as completed() would
                pass  # (nothing was written: every line is rendered before any is queued)
        completed = self.completed
        for line in lines:
            completed(*line)

    def on_failure(self, job: JobInfo, failure: Failure, attempt: int, final: bool) -> None:
        if not final:
            self._log.warning(
                "job.retry",
                function=job.function,
                handle=job.handle_text,
                unique=job.unique_text,
                attempt=attempt,
                attempts=job.attempts,
                outcome=failure.outcome,
                error=failure.message,
            )


class MetricsMiddleware(Middleware):
    """Feeds :class:`gearworker.metrics.Metrics` (jobs started, finished by outcome, durations)."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def before(self, job: JobInfo) -> None:
        self.metrics.job_started(job.function)

    def after(self, job: JobInfo, result: JobResult) -> None:
        self.metrics.job_finished(job.function, result.outcome, result.duration)


def build(
    settings_middleware: Iterable[str],
    found: Iterable[MiddlewareProtocol],
    *,
    metrics: Any = None,
    failed: MiddlewareProtocol | None = None,
    file: str | None = None,
) -> Chain:
    """The worker's chain: logging, metrics (when on), failed-job records (when on), the settings' list,
    then those found in handler modules."""
    items: list[MiddlewareProtocol] = [LogMiddleware()]
    if metrics is not None:
        items.append(MetricsMiddleware(metrics))
    if failed is not None:
        items.append(failed)
    items += [load(spec, file=file) for spec in settings_middleware]
    items += list(found)
    return Chain(items)
