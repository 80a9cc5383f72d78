"""``gearworker run`` with handlers started eagerly: the scratch experiment for the lone-job latency target.

The bench's "eager" kinds run this.  ``Runner.start`` is patched so that an
async handler without a timeout runs its first step inside the read that
brought its JOB_ASSIGN (``asyncio.eager_task_factory``'s idea, written for
3.11): a handler that finishes without waiting never gets a Task, and its
WORK_COMPLETE leaves in the same write as the next GRAB_JOB instead of a loop
turn later.  A handler that awaits gets a Task that resumes it where it
stopped.  Handlers with a timeout keep a Task from the start on 3.11:
``asyncio.timeout()`` needs ``current_task()``.

With ``BENCH_BIND_LOG=1`` the worker also logs through a logger
bound once instead of the module-level proxy (the other recommendation).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import types
from collections.abc import Coroutine, Generator
from typing import Any

import structlog

import gearworker.worker.runner as r
from gearworker.cli import main
from gearworker.protocol import JobAssigned


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> Generator[Any, Any, None]:
    """Drive a coroutine already started by hand, as its Task would: pass futures up, results and errors down."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:  # a cancellation thrown into the task goes to the handler
            try:
                yielded = coro.throw(e)
            except StopIteration:
                return
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return


async def _continue(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    await _resume(coro, yielded)


def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` up to its first real wait now; None if it finished without waiting."""
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return loop.create_task(_continue(coro, yielded))


def _start(self: Any, conn: Any, function: Any, assigned: JobAssigned) -> Any:
    # A copy of Runner.start (commit 3b15736) with the last lines changed.
    assert conn.stream is not None
    self._tokens += 1
    job = r.ActiveJob(function, assigned.handle, assigned.unique, conn, conn.stream, self._tokens, time.monotonic())
    conn.session.attach(assigned.handle, job)
    self._metrics.job_started(function.name)
    if function.handler.cpu:
        job.task = self._loop.create_task(self._run_cpu(job, assigned.data))
    elif function.handler.timeout is None:
        job.task = start_eagerly(self._loop, self._run_async(job, assigned.data))
    else:
        job.task = self._loop.create_task(self._run_async(job, assigned.data))
    return job


r.Runner.start = _start  # type: ignore[method-assign]

if os.environ.get("BENCH_BIND_LOG") == "1":
    # Bound once when the runner is built (logging is configured by then), not looked up through the proxy.
    _original_init = r.Runner.__init__

    def _init(self: Any, *args: Any, **kwargs: Any) -> None:
        r.log = structlog.get_logger("gearworker.worker").bind()
        _original_init(self, *args, **kwargs)

    r.Runner.__init__ = _init  # type: ignore[method-assign]

sys.argv[0] = "gearworker"
sys.exit(main())
