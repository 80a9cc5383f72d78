"""Plain ``def`` handlers without ``cpu=True``: each job runs in a thread of its own.

Such a handler is blocking code that is not worth a pool process (a
synchronous client library, a file system call).  It gets a
:class:`~gearworker.worker.job.CpuJob`, whose reporting calls are plain
calls: each report is handed to the event loop (``call_soon_threadsafe``),
so reports reach the client in order and before the result.

A thread cannot be stopped from outside.  When the job's timeout passes (or
the worker stops past its grace period), the job fails (or is handed back) at
once and its thread is left to finish on its own; its result is then
dropped.  The threads are daemon threads, so one that never returns cannot
keep the process from exiting.  A thread costs about 60 us to start, nothing
next to the blocking work it is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from .job import CpuJob, CpuJobSpec, Reporter

__all__ = ["run_in_thread", "thread_job"]


def thread_job(function: str, handle: bytes, unique: bytes, workload: bytes, report: Reporter) -> CpuJob:
    """The job a thread handler receives: its reports go to ``report`` on the event loop's thread."""
    loop = asyncio.get_running_loop()

    def send(kind: str, args: tuple[bytes, ...]) -> None:
        loop.call_soon_threadsafe(report, kind, args)

    return CpuJob(CpuJobSpec(0, function, handle, unique, workload), send)


def run_in_thread(func: Callable[[CpuJob], Any], job: CpuJob) -> asyncio.Future[Any]:
    """Run ``func(job)`` in a new daemon thread; the future gets its return value or exception."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(error: BaseException | None, value: Any) -> None:
        if future.done():  # timed out or cancelled meanwhile: the result is dropped
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

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
