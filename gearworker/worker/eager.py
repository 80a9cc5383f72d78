"""Start a job's coroutine at once, inside the read that brought it, instead of a loop turn later.

``asyncio.eager_task_factory`` (3.12) does this for every task; the worker
needs it for one call site, so :func:`start_eagerly` does it for one
coroutine, on 3.11 too.  A handler that finishes without waiting (an echo, a
cache hit) gets no Task at all and its WORK_COMPLETE leaves in the same write
as the next GRAB_JOB; one that waits gets a Task that resumes it where it
stopped.

Measured with ``python -m bench.syscalls`` (lone no-op jobs, gearworker at
its defaults): 11.2 -> 10.2 system calls per job (one write fewer); lone-job
latency, see the README's Performance section.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["start_eagerly"]


def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` up to its first real wait now; return its Task, or None if it already finished.

    The first step runs in a copy of the current context, as a Task's would,
    so a handler's ``contextvars`` (structlog's ``bind_contextvars``) never
    leak into the connection that started it.  On 3.11 there is no current
    task during that first step: ``asyncio.timeout()`` needs one, so callers
    start such coroutines with ``loop.create_task`` instead (see
    :data:`NEEDS_TASK_FOR_TIMEOUT`).
    """
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    context = contextvars.copy_context()
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        return None
    return loop.create_task(_continue(coro, yielded), context=context)


#: 3.11's hand-written eager start runs the first step outside any task, where ``asyncio.timeout()`` fails.
NEEDS_TASK_FOR_TIMEOUT = sys.version_info < (3, 12)


async def _continue(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    await _resume(coro, yielded)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> Generator[Any, Any, None]:
    """Drive a coroutine started by hand as its Task would: futures it waits on go up, results and errors down."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:  # a cancellation thrown into the Task belongs to the handler
            try:
                yielded = coro.throw(e)
            except StopIteration:
                return
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return
