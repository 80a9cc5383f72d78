"""gearworker.worker.eager: a job's coroutine starts inside the call that started it, and behaves as a Task after."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gearworker.worker.eager import start_eagerly

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop,
                                                            "uvloop": uvloop.new_event_loop}
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
        loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    seen: list[str] = []

    async def job() -> None:
        seen.append("ran")

    async def main() -> None:
        task = start_eagerly(asyncio.get_running_loop(), job())
        assert seen == ["ran"]
        assert task is None or task.done()

    run(loop_factory, main)


def test_a_coroutine_that_waits_is_resumed_by_a_task_with_what_it_waited_for(
        loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
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
        loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
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
        loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
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
        loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
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
