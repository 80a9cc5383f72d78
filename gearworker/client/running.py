"""A foreground job read as it runs: ``async with client.start(...) as job: async for event in job``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

from ..errors import JobTimeout
from ..protocol import PacketType
from .results import Progress, Result
from .routing import Router, Waiter

__all__ = ["RunningJob"]

_END = object()


class RunningJob:
    """A foreground job read as an async iterator of :class:`Progress`; see :meth:`Client.start`.

    ``send`` queues the job's submit for a :class:`Waiter` and returns the
    connection's router (the client's, with the function, payload, priority
    and unique id bound).
    """

    def __init__(self, send: Callable[[Waiter], Awaitable[Router]], function: str, timeout: float | None) -> None:
        self._send = send
        self._function = function
        self._timeout = timeout
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._waiter: Waiter | None = None
        self._router: Router | None = None
        self._deadline: float | None = None

    @property
    def handle(self) -> bytes:
        """The job handle once the server created the job (empty before)."""
        return self._waiter.handle if self._waiter else b""

    async def __aenter__(self) -> RunningJob:
        loop = asyncio.get_running_loop()
        if self._timeout is not None:
            self._deadline = loop.time() + self._timeout
        self._waiter = waiter = Waiter(
            PacketType.JOB_CREATED, self._function, background=False, sink=self._events.put_nowait
        )
        waiter.future.add_done_callback(lambda _: self._events.put_nowait(_END))
        async with asyncio.timeout_at(self._deadline):
            self._router = await self._send(waiter)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._waiter is not None and self._router is not None and not self._waiter.future.done():
            self._router.forget(self._waiter)  # left early: stop routing to us
            self._waiter.future.cancel()

    def __aiter__(self) -> AsyncIterator[Progress]:
        return self

    async def __anext__(self) -> Progress:
        event = await self._within_deadline(self._events.get())
        if event is _END:
            self._events.put_nowait(_END)  # iterating again ends again
            raise StopAsyncIteration
        assert isinstance(event, Progress)
        return event

    async def result(self) -> Result:
        """Wait for the job's result (raises like :meth:`Client.submit`)."""
        if self._waiter is None:
            raise RuntimeError("use 'async with client.start(...) as job' before awaiting the result")
        result: Result = await self._within_deadline(asyncio.shield(self._waiter.future))
        return result

    async def _within_deadline(self, awaitable: Any) -> Any:
        try:
            async with asyncio.timeout_at(self._deadline):
                return await awaitable
        except TimeoutError as e:
            if self._deadline is None or asyncio.get_running_loop().time() < self._deadline:
                raise
            if self._waiter is not None and self._router is not None:
                self._router.forget(self._waiter)
                self._waiter.future.cancel()
            raise JobTimeout(f"job {self._function!r} did not finish within {self._timeout}s") from e
