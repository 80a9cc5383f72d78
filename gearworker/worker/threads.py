"""Plain ``def`` handlers without ``cpu=True``: each job runs in a thread of its own.

Such a handler is blocking code that is not worth a pool process (a
synchronous client library, a file system call).  It gets a
:class:`~gearworker.worker.job.CpuJob`, whose reporting calls are plain
calls: each report is handed to the event loop (``call_soon_threadsafe``),
so reports reach the client in order and before the result.

A thread cannot be stopped from outside.  When the job's timeout passes (or
its connection drops, or the worker stops past its grace period), the job
fails (or is handed back) at once and its thread is left to finish on its
own; its result is then dropped.  Such a thread keeps a place in each of
the job's limits until it returns (``left_running`` of :func:`run_in_thread`,
counted by :class:`ThreadsLeft`):
a handler whose calls hang fills its limit and stops taking jobs, rather
than start a thread for each new job without end.  The threads are daemon
threads, so one that never returns cannot keep the process from exiting.  A
thread costs about 60 us to start, nothing next to the blocking work it is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from .job import CpuJob, CpuJobSpec, Reporter

if TYPE_CHECKING:
    from .capacity import Function

__all__ = ["ThreadsLeft", "run_in_thread", "thread_job"]

log = structlog.get_logger("gearworker.worker")


def thread_job(function: str, handle: bytes, unique: bytes, workload: bytes, report: Reporter) -> CpuJob:
    """The job a thread handler receives: its reports go to ``report`` on the event loop's thread."""
    loop = asyncio.get_running_loop()

    def send(kind: str, args: tuple[bytes, ...]) -> None:
        loop.call_soon_threadsafe(report, kind, args)

    return CpuJob(CpuJobSpec(0, function, handle, unique, workload), send)


def run_in_thread(
    func: Callable[[CpuJob], Any], job: CpuJob, left_running: Callable[[], Callable[[], None]]
) -> asyncio.Future[Any]:
    """Run ``func(job)`` in a new daemon thread; the future gets its return value or exception.

    When the future is cancelled (the job timed out, or was cancelled) while
    the thread still runs, ``left_running()`` is called, and what it returns
    is called once the thread returns.  Both run on the event loop.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    thread_returned = False
    on_return: Callable[[], None] | None = None  # set when the thread outlives its future

    def settle(error: BaseException | None, value: Any) -> None:
        nonlocal thread_returned
        thread_returned = True
        if on_return is not None:  # the job ended without it: the result is dropped
            on_return()
        elif not future.done():  # (done: cancelled just before the thread returned; nothing runs on)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def cancelled(_: asyncio.Future[Any]) -> None:
        nonlocal on_return
        if future.cancelled() and not thread_returned:
            on_return = left_running()

    # Added before anyone awaits the future, so it runs before the awaiting Task
    # resumes: the thread takes its places before the job's own are freed.
    future.add_done_callback(cancelled)

    def target() -> None:
        error: BaseException | None = None
        value: Any = None
        try:
            value = func(job)
        except BaseException as e:  # reported to the job, like an async handler's exception
            error = e
        with contextlib.suppress(RuntimeError):  # the loop is closed: the worker has stopped, nobody waits
            loop.call_soon_threadsafe(settle, error, value)

    threading.Thread(target=target, name=f"gearworker handler {job.function}", daemon=True).start()
    return future


class ThreadsLeft:
    """The handler threads still running past their job, by function name.

    A thread cannot be stopped: it keeps a place in each of the job's
    limits until it returns, so that a handler whose calls hang stops
    taking jobs once its limit is full instead of starting threads
    without end.
    """

    def __init__(self, on_thread: Callable[[Function, int], None]) -> None:
        #: Takes (+1), then gives back (-1), a place in each of a function's limits.
        self._on_thread = on_thread
        self._count: dict[str, int] = {}

    def add(self, function: Function, handle: bytes, unique: bytes) -> Callable[[], None]:
        """A job's attempt ended (its timeout, a cancel) while its thread runs on; return what its end calls."""
        name = function.name
        self._on_thread(function, 1)
        self._count[name] = self._count.get(name, 0) + 1
        left_at = time.monotonic()
        handle_text = handle.decode(errors="replace")
        log.warning(
            "job.thread_running_on",
            function=name,
            handle=handle_text,
            unique=unique.decode(errors="replace"),
            timeout=function.handler.timeout,
            threads=self._count[name],
        )

        def returned() -> None:
            self._count[name] -= 1
            self._on_thread(function, -1)
            log.info(
                "job.thread_finished",
                function=name,
                handle=handle_text,
                late=round(time.monotonic() - left_at, 3),
                threads=self._count[name],
            )

        return returned
