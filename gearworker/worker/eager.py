"""Start a job's coroutine at once, inside the read that brought it, instead of a loop turn later.

``asyncio.eager_task_factory`` (3.12) does this for every task; the worker
needs it for one call site, so :func:`start_eagerly` does it for one
coroutine, on 3.11 too.  A handler that finishes without waiting (an echo, a
cache hit) has its WORK_COMPLETE written within the read that brought it;
one that waits goes on in its Task, which resumes it where it stopped.

The first step runs inside that Task, as any Task's does: ``asyncio.current_task()``
is the Task from the handler's first line to its last, so ``asyncio.timeout()``
and ``asyncio.TaskGroup``, which need it, work before the first ``await`` too
(on 3.11 they failed there with "Timeout should be used inside a task" until
the Task was made first).

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


def _start_eagerly_312(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` up to its first real wait now, inside its Task; return that Task, or None if it already finished.

    The first step runs in a copy of the current context, as a Task's would,
    so a handler's ``contextvars`` (structlog's ``bind_contextvars``) never
    leak into the connection that started it.
    """
    task = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    return None if task.done() else task


class _FirstStep:
    """What a hand-run first step left for the Task that goes on with it (3.11)."""

    __slots__ = ("coro", "finished", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro = coro
        self.finished = False
        self.yielded: Any = None


def _start_eagerly_311(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """The same as on 3.12, by hand."""
    # 3.11 has no eager start: the Task is made first (it will take its own first
    # step a loop turn later: _continue, which then resumes the coroutine where
    # the step below left it), then made the current task while the first step
    # runs by hand, as 3.12's eager start does (swapping out any task current now).
    context = contextvars.copy_context()
    step = _FirstStep(coro)
    task = loop.create_task(_continue(step), context=context)
    caller = _current_tasks.get(loop)  # asyncio.current_task(loop) without its Python frame
    if caller is not None:
        _leave_task(loop, caller)
    _enter_task(loop, task)
    try:
        step.yielded = context.run(coro.send, None)
    except StopIteration:
        step.finished = True
        return None  # the Task's turn finds nothing left to do
    except BaseException:
        step.finished = True
        raise
    finally:
        _leave_task(loop, task)
        if caller is not None:
            _enter_task(loop, caller)
    return task


#: Chosen once, not per call: a call less on the way from a job's bytes to its handler.
start_eagerly = _start_eagerly_312 if sys.version_info >= (3, 12) else _start_eagerly_311

_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task
_current_tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] = asyncio.tasks._current_tasks  # type: ignore[attr-defined]


async def _continue(step: _FirstStep) -> None:
    if not step.finished:
        await _resume(step.coro, step.yielded)


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
