"""The worker's middleware chain: which hooks run around each job, in which order, and when.

The hook API itself (:class:`~gearworker.middleware.Middleware`,
:class:`~gearworker.middleware.JobInfo`, ...) is public and lives in
:mod:`gearworker.middleware`.  This module is the worker's side of it:

- :func:`build` assembles the chain: the ``job.done`` line, metrics (when on),
  failed-job records (when on), the ``middleware`` setting's list, then the
  middlewares found in handler modules;
- :class:`Chain` calls them, skipping the hooks a middleware does not
  override, and logs and ignores a hook that raises;
- :class:`CompletedHooks` runs completed jobs' after-hooks in batches, after
  their results were written (see its docstring for the measured reason).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ..logs import contextvars_bound
from ..middleware import (
    FINAL_HOOK_TIMEOUT,
    BatchRenderer,
    CompletedLine,
    Failure,
    JobInfo,
    JobResult,
    Middleware,
    MiddlewareProtocol,
)

__all__ = ["AFTER_BATCH", "AFTER_DELAY", "Chain", "CompletedHooks", "build"]

#: Seconds a completed job's after-hooks (its job.done line, metrics) may wait, to run in a batch
#: once the loop has nothing more urgent; and the batch size that runs them at once.
AFTER_DELAY = 0.02
AFTER_BATCH = 128


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
    from ..logs.jobline import LogMiddleware
    from .registry import load_middleware

    items: list[MiddlewareProtocol] = [LogMiddleware()]
    if metrics is not None:
        from ..metrics.middleware import MetricsMiddleware

        items.append(MetricsMiddleware(metrics))
    if failed is not None:
        items.append(failed)
    items += [load_middleware(spec, file=file) for spec in settings_middleware]
    items += list(found)
    return Chain(items)


class Chain:
    """The middlewares of a worker, called in order; a failing hook is logged and skipped."""

    __slots__ = (
        "_after",
        "_after_complete",
        "_before",
        "_failure",
        "_final",
        "batch_renderer",
        "has_after_complete",
        "has_before",
        "items",
    )

    def __init__(self, items: Sequence[MiddlewareProtocol]) -> None:
        self.items = list(items)
        # Only the hooks a middleware overrides are called: the no-op defaults
        # would cost a call each per job for nothing.
        self._before = [m.before for m in self.items if _overrides(m, "before")]
        self._after = [m.after for m in reversed(self.items) if _overrides(m, "after")]
        # A middleware with quiet_on_complete = True does nothing in after() for a completed job
        # (the job.done line with info logging off): the worker then makes no JobInfo/JobResult for it.
        hearing = [m for m in reversed(self.items) if _overrides(m, "after") and not _quiet(m)]
        self._after_complete = [m.after for m in hearing]
        self.has_before = bool(self._before)
        self.has_after_complete = bool(self._after_complete)
        #: The one middleware that hears of completed jobs, when it renders them in batches (the
        #: default: the job.done line alone; see gearworker.middleware.BatchRenderer).
        self.batch_renderer: BatchRenderer | None = None
        if len(hearing) == 1 and getattr(hearing[0], "renders_batches", False) is True:
            self.batch_renderer = hearing[0]  # type: ignore[assignment]
        self._failure = [m.on_failure for m in self.items if _overrides(m, "on_failure")]
        # (hook, its time limit): FINAL_HOOK_TIMEOUT unless the middleware sets final_hook_timeout
        # (None: the hook bounds its own waits, as the failed-job recorder does).
        self._final = [
            (hook, getattr(m, "final_hook_timeout", FINAL_HOOK_TIMEOUT))
            for m in self.items
            if callable(hook := getattr(m, "before_final_failure", None))
        ]

    @property
    def has_final_hooks(self) -> bool:
        """True when some middleware wants ``before_final_failure`` awaited."""
        return bool(self._final)

    async def before_final_failure(self, job: JobInfo) -> None:
        """Await each ``before_final_failure`` hook, each for at most :data:`FINAL_HOOK_TIMEOUT` seconds
        (or its middleware's ``final_hook_timeout``)."""
        for hook, limit in self._final:
            try:
                async with asyncio.timeout(limit):
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


def _quiet(m: object) -> bool:
    """``quiet_on_complete``: the middleware's ``after`` does nothing for a completed job."""
    return getattr(m, "quiet_on_complete", False) is True


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


class EndedJob(Protocol):
    """What :class:`CompletedHooks` needs of a completed job besides its line."""

    @property
    def info(self) -> JobInfo: ...

    @property
    def attempts(self) -> int: ...


_Call = tuple[contextvars.Context | None, Callable[..., None], tuple[Any, ...]]


class CompletedHooks:
    """Completed jobs' after-hooks, run in a batch up to :data:`AFTER_DELAY` later.

    A completed job's hooks run after its result is written, in a batch (their
    lines carry the job's own end time).  Lone-job p50 at defaults against
    PHP's worker (an A/B of 6 alternated runs): hooks before the write 1.27x;
    right after it (``call_soon``) 1.13x, the CPU then still competing with
    gearmand and the client for 2 cores; batched 0.96x, as with logging off
    (1.00x).

    Two queues: the plain lines of the chain's batch renderer (the default
    ``job.done`` line alone: no :class:`JobInfo`, :class:`JobResult` or chain
    call per job), and hook calls for everything else.  A job whose handler
    bound structlog contextvars has its hooks run in a copy of its own
    context, so that its line carries them and no other job's does.  The
    batches run in the context this object was made in, never in that of the
    job that happened to start one.
    """

    __slots__ = ("_calls", "_chain", "_context", "_lines", "_loop", "_renderer")

    def __init__(self, chain: Chain) -> None:
        self._chain = chain
        self._renderer = chain.batch_renderer
        self._loop = asyncio.get_running_loop()
        self._lines: list[CompletedLine] = []
        self._calls: list[_Call] = []
        self._context = contextvars.copy_context()

    def add(self, job: EndedJob, line: CompletedLine) -> None:
        """Queue the hooks of ``job``, which completed: ``line`` is (function, handle, unique, duration, end)."""
        renderer = self._renderer
        if contextvars_bound():
            call: _Call = (
                (contextvars.copy_context(), renderer.completed, line)
                if renderer is not None
                else (contextvars.copy_context(), self._chain.after, self._after_args(job, line))
            )
            calls = self._calls
            calls.append(call)
            n = len(calls)
        elif renderer is not None:  # (fixed with the chain: the other queue is used only with contextvars)
            lines = self._lines
            lines.append(line)
            n = len(lines)
        else:
            calls = self._calls
            calls.append((None, self._chain.after, self._after_args(job, line)))
            n = len(calls)
        # The first entry of a queue starts the batch's timer (the other queue's first entry may
        # start another: the batch that finds nothing to do is a no-op).
        if n == 1:
            self._loop.call_later(AFTER_DELAY, self.run, context=self._context)
        elif n == AFTER_BATCH:
            self._loop.call_soon(self.run, context=self._context)

    @staticmethod
    def _after_args(job: EndedJob, line: CompletedLine) -> tuple[JobInfo, JobResult]:
        return job.info, JobResult("complete", line[3], None, job.attempts, line[4])

    def run(self) -> None:
        """Run the hooks still waiting for their batch (also called at shutdown)."""
        lines, self._lines = self._lines, []
        if lines:
            assert self._renderer is not None
            self._renderer.completed_many(lines)
        calls, self._calls = self._calls, []
        for context, hook, args in calls:
            if context is None:
                hook(*args)
            else:
                context.run(hook, *args)
