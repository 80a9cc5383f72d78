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
import collections.abc
import contextvars
import sys
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


class _Continuation(collections.abc.Coroutine[Any, Any, None]):
    """What the 3.11 Task runs: the handler's coroutine, from where its hand-run first step left it.

    Not an ``async def``: a coroutine that has not started cannot take a
    cancellation into its body, and the Task may be cancelled before its
    first turn (the connection dropping in the read that brought the job).
    This passes that cancellation to the handler where it waits, as 3.12's
    eager Task does; otherwise the handler never hears of it and the Runner
    never hands the job back nor frees its place in the limits.
    """

    __slots__ = ("_coro", "_first", "finished")

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self._coro = coro
        self._first: Any = None  # what the first step waits on: the Task's first turn waits on it too
        self.finished = False  # the first step ran the coroutine to its end (or out with an error)

    def send(self, value: Any) -> Any:
        if self.finished:
            raise StopIteration
        first, self._first = self._first, _STARTED
        if first is not _STARTED:  # the Task's first turn
            return first
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self.finished:
            raise typ if val is None else val
        self._first = _STARTED
        return self._coro.throw(typ, val, tb) if val is not None or tb is not None else self._coro.throw(typ)

    def close(self) -> None:
        if not self.finished:
            self._coro.close()

    def __await__(self) -> Generator[Any, None, None]:  # (never awaited: only a Task runs it)
        raise TypeError("_Continuation is run by its Task only")


_STARTED = object()


def _start_eagerly_311(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """The same as on 3.12, by hand."""
    # 3.11 has no eager start: the Task is made first (it takes its own first turn a
    # loop turn later, and goes on from where the step below left the coroutine),
    # then made the current task while the first step runs by hand, as 3.12's eager
    # start does (swapping out any task current now).
    context = contextvars.copy_context()
    rest = _Continuation(coro)
    task = loop.create_task(rest, context=context)
    caller = _current_tasks.get(loop)  # asyncio.current_task(loop) without its Python frame
    if caller is not None:
        _leave_task(loop, caller)
    _enter_task(loop, task)
    try:
        rest._first = context.run(coro.send, None)
    except StopIteration:
        rest.finished = True
        return None  # the Task's turn finds nothing left to do
    except BaseException:
        rest.finished = True
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
