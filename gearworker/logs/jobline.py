"""The worker's own per-job log lines: ``job.done`` for every job, ``job.retry`` for each retried attempt.

One ``job.done`` line per job at info level is the default, so this line is
on the per-job path and written for speed: the values of a filtered-out line
are never built, a completed job's line waits for its batch (see
:class:`gearworker.worker.chain.CompletedHooks`) and a batch is rendered in
one step (:func:`gearworker.logs.json_writer`).
"""

from __future__ import annotations

import datetime
import logging

import structlog

from ..middleware import CompletedLine, Failure, JobInfo, JobResult, Middleware
from . import json_writer

__all__ = ["LogMiddleware"]

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


class LogMiddleware(Middleware):
    """The worker's ``job.done`` line (info when complete, warning otherwise) and ``job.retry`` warnings.

    It renders completed jobs' lines in batches (:class:`gearworker.middleware.BatchRenderer`).
    """

    renders_batches = True

    def __init__(self) -> None:
        self._json_writer = json_writer
        # Bound once: each call through structlog's lazy proxy costs a __getattr__
        # and a bind() (~1 us of a job.done line, bench.logcost).
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
        """The info ``job.done`` line of one completed job.

        ``after`` calls it, and so does a batch for a job whose handler bound contextvars.
        """
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
            structlog.get_logger("gearworker.middleware").error(
                "middleware.error",
                hook="LogMiddleware.completed",
                function=function,
                handle=handle.decode("utf-8", "replace"),
                exc_info=True,
            )

    def completed_many(self, lines: list[CompletedLine]) -> None:
        """The info ``job.done`` lines of a batch of completed jobs, written together.

        The batch is :class:`gearworker.worker.chain.CompletedHooks`'s.

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
