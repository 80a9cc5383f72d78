"""One client connection per job server, and the router that hands its replies to callers.

Gearman answers a connection's requests in the order they were sent, so the
replies that carry no handle (JOB_CREATED, OPTION_RES, ERROR) and the status
replies are matched first-in first-out with the requests that asked for them.
After JOB_CREATED, a foreground job's WORK_* packets carry its handle and are
routed by it; a handle maps to a list of waiters because gearmand coalesces
submits that share a unique id into one job with one handle.

A caller that stops waiting (cancelled, timed out) never disturbs the others:
before JOB_CREATED its FIFO slot stays, marked abandoned, so later replies
still line up; after it, the caller is just taken off its handle's list.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from ..errors import ConnectionLost, JobException, JobFailed, NoServerAvailable, RemoteProtocolError, ServerRefused
from ..payload import to_int
from ..protocol import Packet, PacketType, encode_request
from ..transport import Endpoint, PacketStream
from .health import server_health
from .results import Progress, Result

__all__ = ["Router", "ServerConnection", "Waiter"]

log = structlog.get_logger("gearworker.client")

_T = PacketType


class Waiter:
    """One request waiting for replies on one connection."""

    __slots__ = ("abandoned", "address", "background", "expect", "function", "future", "handle", "sink", "warning")

    def __init__(
        self,
        expect: PacketType,
        function: str = "",
        *,
        background: bool = True,
        sink: Callable[[Progress], object] | None = None,
    ) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.expect = expect  # the reply that answers this request in FIFO order
        self.function = function
        self.background = background  # True: the reply itself is the answer (no WORK_* follow)
        self.sink = sink  # receives Progress events of a foreground job
        self.handle = b""
        self.warning = b""  # the last WORK_WARNING: gearworker's failure message
        self.abandoned = False
        self.address = ""


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
        # A caller that already gave up never retrieves this: don't warn about it.
        future.exception()


class Router:
    """Routes one connection's replies to the callers waiting for them.

    It is the :class:`~gearworker.transport.PacketStream`'s receiver; the
    stream does the batching, back-pressure and heartbeat.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.stream: PacketStream | None = None
        self._fifo: deque[Waiter] = deque()  # requests answered in order
        self._jobs: dict[bytes, list[Waiter]] = {}  # handle -> foreground waiters
        self._copies: dict[bytes, int] = {}  # handle -> progress packets seen (coalesced submits: see _route)
        self._tasks: set[asyncio.Future[Any]] = set()  # async progress callbacks in flight
        self.closed = False

    # -- transport.Receiver -------------------------------------------------

    def packet_received(self, packet: Packet) -> None:
        ptype = packet.type
        if ptype in _ROUTED:
            self._route(packet)
        elif ptype in _IN_ORDER:
            self._answer(packet)
        elif ptype is not _T.NOOP:
            raise RemoteProtocolError(f"unexpected {ptype.name} on a client connection")

    def connection_lost(self, reason: Exception | None) -> None:
        why = f": {reason}" if reason else ""
        if isinstance(reason, RemoteProtocolError):
            why = f": it sent invalid data ({reason})"
        self._lose(ConnectionLost(f"lost connection to job server {self.address}{why}"))

    # -- sending ----------------------------------------------------------

    def send(self, data: bytes, waiter: Waiter | None = None) -> None:
        """Queue ``data`` for this loop tick's single write; ``waiter`` awaits its reply."""
        if self.closed or self.stream is None:
            raise ConnectionLost(f"connection to job server {self.address} is closed")
        self.stream.send(data)
        if waiter is not None:
            waiter.address = self.address
            self._fifo.append(waiter)

    def forget(self, waiter: Waiter) -> None:
        """The caller of ``waiter`` stopped waiting: drop it without disturbing the others."""
        if not waiter.handle:
            waiter.abandoned = True  # keep the FIFO slot: its JOB_CREATED is still coming
            return
        waiters = self._jobs.get(waiter.handle)
        if waiters is not None and waiter in waiters:
            # Keep its place: gearmand still sends it its copy of every event
            # (see _route).  Once nobody is left waiting, forget the handle.
            waiter.abandoned = True
            if all(w.abandoned for w in waiters):
                del self._jobs[waiter.handle]
                self._copies.pop(waiter.handle, None)

    @property
    def in_flight(self) -> int:
        """Requests and foreground jobs this connection is waiting on."""
        return len(self._fifo) + sum(len(w) for w in self._jobs.values())

    def close(self) -> None:
        """Close the connection; everything still waiting fails with ConnectionLost."""
        if self.stream is not None:
            self.stream.abort(ConnectionLost(f"client closed its connection to {self.address}"))
        self._lose(ConnectionLost(f"client closed its connection to {self.address}"))

    def _lose(self, error: ConnectionLost) -> None:
        if self.closed:
            return
        self.closed = True
        waiters = list(self._fifo) + [w for ws in self._jobs.values() for w in ws]
        self._fifo.clear()
        self._jobs.clear()
        self._copies.clear()
        for waiter in waiters:
            if waiter.handle:
                message = f"{error}; job {waiter.handle.decode(errors='replace')} ({waiter.function}) was in flight"
            else:
                message = str(error)
            _fail(waiter.future, ConnectionLost(message))

    # -- receiving --------------------------------------------------------

    def _answer(self, packet: Packet) -> None:
        if not self._fifo:
            raise RemoteProtocolError(f"{packet.type.name} with no request waiting for it")
        waiter = self._fifo.popleft()
        if packet.type is _T.ERROR:
            code, text = packet.args
            why = f"{code.decode(errors='replace')} {text.decode(errors='replace')}"
            _fail(waiter.future, ServerRefused(f"job server {self.address} refused the request: {why}"))
            return
        if packet.type is not waiter.expect:
            raise RemoteProtocolError(f"got {packet.type.name}, expected {waiter.expect.name}")
        if packet.type is _T.JOB_CREATED:
            self._created(waiter, packet.args[0])
        elif not waiter.future.done():
            waiter.future.set_result(packet)

    def _created(self, waiter: Waiter, handle: bytes) -> None:
        waiter.handle = handle
        if waiter.background:  # background job: the handle is the answer
            if not waiter.future.done():
                waiter.future.set_result(handle)
        elif not waiter.future.done() or waiter.abandoned:
            # Abandoned ones too: gearmand sends one copy of each event per submit.
            self._jobs.setdefault(handle, []).append(waiter)

    def _route(self, packet: Packet) -> None:
        handle = packet.args[0]
        if packet.type is _T.WORK_FAIL:
            # gearmand 1.1.20 may append a NUL and data to WORK_FAIL's handle.
            handle = handle.partition(b"\x00")[0]
        waiters = self._jobs.get(handle)
        if waiters is None:
            return  # a job whose callers all gave up, or a coalesced duplicate reply
        ptype = packet.type
        if ptype is _T.WORK_COMPLETE:
            del self._jobs[handle]
            self._copies.pop(handle, None)
            result = Result(packet.args[1])
            for w in waiters:
                if not w.future.done():
                    w.future.set_result(result)
        elif ptype is _T.WORK_FAIL or ptype is _T.WORK_EXCEPTION:
            del self._jobs[handle]
            self._copies.pop(handle, None)
            for w in waiters:
                if not w.abandoned:
                    _fail(w.future, _job_error(ptype, packet, w))
        else:
            # Submits coalesced on this connection each get their own copy of
            # every event from gearmand, back to back: hand copy i to waiter i,
            # or each waiter would see every event once per submit.
            seen = self._copies.get(handle, 0)
            self._copies[handle] = seen + 1
            w = waiters[seen % len(waiters)]
            if w.abandoned or w.future.done():
                return
            event = _progress(ptype, packet, handle)
            if ptype is _T.WORK_WARNING:
                w.warning = event.data
            self._deliver(w, event)

    def _deliver(self, waiter: Waiter, event: Progress) -> None:
        if waiter.sink is None:
            return
        try:
            outcome: Any = waiter.sink(event)
        except Exception:
            log.exception("client.progress_callback_failed", server=self.address, function=waiter.function)
            return
        if inspect.isawaitable(outcome):
            # Run async callbacks beside routing: a slow one must not hold up other jobs' results.
            task = asyncio.ensure_future(outcome)
            self._tasks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("client.progress_callback_failed", server=self.address, error=repr(task.exception()))


_ROUTED = frozenset({_T.WORK_COMPLETE, _T.WORK_FAIL, _T.WORK_EXCEPTION, _T.WORK_STATUS, _T.WORK_DATA, _T.WORK_WARNING})
_IN_ORDER = frozenset({_T.JOB_CREATED, _T.ERROR, _T.OPTION_RES, _T.STATUS_RES, _T.STATUS_RES_UNIQUE, _T.ECHO_RES})


def _progress(ptype: PacketType, packet: Packet, handle: bytes) -> Progress:
    if ptype is _T.WORK_STATUS:
        return Progress("status", to_int(packet.args[1]), to_int(packet.args[2]), handle=handle)
    return Progress("data" if ptype is _T.WORK_DATA else "warning", data=packet.args[1], handle=handle)


def _job_error(ptype: PacketType, packet: Packet, waiter: Waiter) -> JobFailed:
    if ptype is _T.WORK_EXCEPTION:
        message = packet.args[1].decode(errors="replace") or "job raised an exception"
        return JobException(message, handle=waiter.handle, function=waiter.function)
    # gearworker's convention: WORK_WARNING("Type: message") then WORK_FAIL.
    message = waiter.warning.decode(errors="replace") if waiter.warning else "job failed"
    return JobFailed(message, handle=waiter.handle, function=waiter.function)


class ServerConnection:
    """The one shared connection to one job server, (re)connected lazily with backoff.

    A failed connect puts the server in a back-off window during which
    :meth:`get` fails at once (so a submit fails over to the next server
    without waiting); the first use after the window tries again.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.address = endpoint.address
        self.router: Router | None = None  # set while connected
        self._connecting: asyncio.Future[Router] | None = None
        self._retry_at = 0.0
        self.last_error = ""

    async def get(self) -> Router:
        """Return the live connection's router, connecting first if needed."""
        if self.router is not None:
            return self.router
        if self._connecting is None:
            if time.monotonic() < self._retry_at:
                wait = self._retry_at - time.monotonic()
                raise NoServerAvailable(f"{self.address}: {self.last_error} (next try in {wait:.1f}s)")
            self._connecting = asyncio.ensure_future(self._connect())
            # Its callers may all give up (a timeout) before it fails: the failure is
            # still noted (last_error, the back-off), so asyncio must not report it unread.
            self._connecting.add_done_callback(_ignore_result)
        # shield: one caller cancelled must not abort the connect the others wait on
        fut = self._connecting
        return await asyncio.shield(fut)

    async def _connect(self) -> Router:
        router = _LinkedRouter(self)
        try:
            stream = await self.endpoint.dial(router)
        except NoServerAvailable as e:
            self.last_error = str(e)
            self._retry_at = time.monotonic() + self.endpoint.backoff.next_delay()
            log.warning("client.connect_failed", server=self.address, error=self.last_error)
            server_health().down(self.endpoint, self.last_error)
            raise
        finally:
            self._connecting = None
        self.endpoint.backoff.reset()
        router.stream = stream
        self.router = router
        # Ask for WORK_EXCEPTION as such (else gearmand 1.1.20 mangles it into WORK_FAIL).
        # Pipelined: its OPTION_RES is matched in order like any other reply.
        option = Waiter(_T.OPTION_RES)
        option.future.add_done_callback(_ignore_result)
        router.send(encode_request(_T.OPTION_REQ, b"exceptions"), option)
        log.info("client.connected", server=self.address)
        return router

    def lost(self, router: Router) -> None:
        """``router``'s connection is gone: the next use connects again."""
        if self.router is router:
            self.router = None
            log.info("client.disconnected", server=self.address)

    def close(self) -> None:
        """Close the connection (if any); waiting callers fail with ConnectionLost."""
        router, self.router = self.router, None
        if router is not None:
            router.close()
        if self._connecting is not None:
            self._connecting.cancel()


class _LinkedRouter(Router):
    """A router that tells its :class:`ServerConnection` when its connection is gone."""

    def __init__(self, owner: ServerConnection) -> None:
        super().__init__(owner.address)
        self._owner = owner

    def connection_lost(self, reason: Exception | None) -> None:
        closed_by_us = self.closed
        super().connection_lost(reason)
        self._owner.lost(self)
        if not closed_by_us:  # dropped, reset, or declared dead by the heartbeat: down until it answers
            with contextlib.suppress(RuntimeError):  # (no running loop: the process is ending)
                server_health().down(self._owner.endpoint, str(reason or "connection lost"))


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
