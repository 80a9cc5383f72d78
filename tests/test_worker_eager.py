"""gearworker.worker.eager: a job's coroutine starts inside the call that started it, and behaves as a Task after."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gearworker.worker.eager import start_eagerly

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def run(factory: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = factory()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.fixture(params=list(LOOPS))
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    return LOOPS[request.param]


def test_a_coroutine_that_never_waits_runs_to_the_end_before_start_returns(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    seen: list[str] = []

    async def job() -> None:
        seen.append("ran")

    async def main() -> None:
        task = start_eagerly(asyncio.get_running_loop(), job())
        assert seen == ["ran"]
        assert task is None or task.done()

    run(loop_factory, main)


def test_a_coroutine_that_waits_is_resumed_by_a_task_with_what_it_waited_for(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    seen: list[object] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()

        async def job() -> None:
            seen.append("first step")
            seen.append(await fut)
            await asyncio.sleep(0)
            seen.append("end")

        task = start_eagerly(loop, job())
        assert seen == ["first step"] and task is not None and not task.done()
        fut.set_result(42)
        await task
        assert seen == ["first step", 42, "end"]

    run(loop_factory, main)


def test_cancelling_the_task_cancels_the_handler_where_it_waits_and_it_sees_who_cancelled(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    seen: list[object] = []

    async def job() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            seen.append(task is not None and task.cancelling() > 0)  # the worker's "cancelled by us" test
            raise

    async def main() -> None:
        task = start_eagerly(asyncio.get_running_loop(), job())
        assert task is not None
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == [True]

    run(loop_factory, main)


def test_an_error_after_the_first_wait_ends_the_task_with_it(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def job() -> None:
        await asyncio.sleep(0)
        raise ValueError("late failure")

    async def main() -> None:
        task = start_eagerly(asyncio.get_running_loop(), job())
        assert task is not None
        with pytest.raises(ValueError, match="late failure"):
            await task

    run(loop_factory, main)


def test_context_variables_a_handler_sets_stay_in_its_own_context(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    seen: list[str] = []

    async def job(name: str) -> None:
        var.set(name)  # e.g. structlog.contextvars.bind_contextvars(handle=...)
        await asyncio.sleep(0)
        seen.append(var.get())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        first, second = start_eagerly(loop, job("first")), start_eagerly(loop, job("second"))
        assert var.get() == "unset"  # nothing leaked into the caller (the connection's read)
        await asyncio.gather(*(t for t in (first, second) if t is not None))
        assert sorted(seen) == ["first", "second"]

    run(loop_factory, main)


def test_the_first_step_runs_inside_the_task_that_goes_on_with_it(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """asyncio.current_task() is one Task from the handler's first line to its last, as in any Task."""
    seen: list[asyncio.Task[Any] | None] = []

    async def job() -> None:
        seen.append(asyncio.current_task())
        await asyncio.sleep(0)
        seen.append(asyncio.current_task())

    async def main() -> None:
        caller = asyncio.current_task()
        task = start_eagerly(asyncio.get_running_loop(), job())
        assert asyncio.current_task() is caller  # the caller's task is current again
        assert task is not None and seen == [task]
        await task
        assert seen == [task, task]

    run(loop_factory, main)


def test_asyncio_timeout_and_task_groups_work_in_the_first_step(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """Both need a current task: a handler opening one before its first await must not fail (3.11 did)."""
    seen: list[str] = []

    async def child() -> None:
        seen.append("child")

    async def job() -> None:
        async with asyncio.timeout(10):
            seen.append("inside a timeout")
        async with asyncio.TaskGroup() as group:
            group.create_task(child())
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        except TimeoutError:
            seen.append("timed out")

    async def main() -> None:
        task = start_eagerly(asyncio.get_running_loop(), job())
        assert task is not None
        await task
        assert seen == ["inside a timeout", "child", "timed out"]

    run(loop_factory, main)


def test_a_coroutine_started_from_a_plain_callback_gets_its_task_too(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """The worker starts handlers from a socket read, where no task is current."""
    seen: list[object] = []

    async def job() -> None:
        async with asyncio.timeout(10):
            seen.append(asyncio.current_task() is not None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_soon(lambda: done.set_result(start_eagerly(loop, job())))
        await asyncio.wait_for(done, 5)  # (on failure the callback raised and never set it)
        assert seen == [True]

    run(loop_factory, main)


def test_a_task_cancelled_before_its_first_turn_still_cancels_the_handler_where_it_waits(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """The connection can drop in the read that brought the job: the handler must see that cancellation.

    (Otherwise its ``except CancelledError`` never runs, and the Runner never hands the job back nor
    frees its place in the limits.)
    """
    seen: list[str] = []

    async def job() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled where it waited")
            raise

    async def main() -> None:
        task = start_eagerly(asyncio.get_running_loop(), job())
        assert task is not None
        task.cancel()  # before the task's first turn
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["cancelled where it waited"]

    run(loop_factory, main)
