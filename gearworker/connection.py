"""The thin asyncio adapter: one TCP connection to one job server.

:class:`PacketStream` moves bytes between a socket and the sans-IO
:class:`~gearworker.protocol.Parser`; it knows nothing about jobs.
:class:`Link` keeps one such stream connected, reconnecting with exponential
backoff and jitter, and tells its owner when the stream comes and goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import typing
from collections.abc import Callable
from typing import Protocol

import structlog

from .backoff import Backoff
from .errors import ConnectionLost, RemoteProtocolError
from .protocol import Magic, Packet, Parser

log = structlog.get_logger("gearworker.connection")

#: Seconds a connection must last before the reconnect backoff starts again from its minimum.
_STABLE_AFTER = 2.0


class PacketStream(asyncio.Protocol):
    """One connection's byte pump.

    Writes made during one turn of the event loop are joined and written once
    at the end of that turn: a worker finishing 50 jobs in one turn sends one
    segment, not 50 (measured: a third fewer syscalls per job in the echo
    benchmark).
    """

    def __init__(self, on_packet: Callable[[Packet], None], *, max_packet_size: int) -> None:
        self._on_packet = on_packet
        self._parser = Parser(expect=Magic.RES, max_packet_size=max_packet_size)
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[Exception | None] = self._loop.create_future()

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = typing.cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # a request/response protocol: never wait for Nagle
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            packets = self._parser.feed(data)
        except RemoteProtocolError as e:
            self.abort(e)
            return
        on_packet = self._on_packet
        for packet in packets:
            if self._transport is None or self.closed.done():
                return  # a handler reset the connection mid-batch: ignore the rest
            on_packet(packet)
        # What these packets made us send (grabs, mostly) goes out now, not a
        # loop turn later: the answers to a read are already one batch.  Lone-job
        # p50 latency 1.54x -> 1.34-1.43x PHP's; tiny-job CPU per job unchanged
        # (10.3 vs 10.5 us, python -m bench).
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._out.clear()
        if not self.closed.done():
            self.closed.set_result(exc)

    # -- used by the owner --------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, data: bytes) -> None:
        """Queue ``data``; it is written at the end of this loop turn."""
        if self._transport is None:
            raise ConnectionLost("connection is closed")
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        if self._transport is None or not self._out:
            return
        out = self._out
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def close(self) -> None:
        """Flush what is queued, then close (a FIN: gearmand re-queues our jobs)."""
        if self._transport is not None:
            self._flush()
            self._transport.close()

    def abort(self, reason: Exception | None = None) -> None:
        """Drop the connection at once, discarding unsent data."""
        if not self.closed.done():
            self.closed.set_result(reason)
        if self._transport is not None:
            self._transport.abort()


class LinkOwner(Protocol):
    """What a :class:`Link` reports to."""

    def link_up(self, link: Link, stream: PacketStream) -> None: ...

    def link_down(self, link: Link, reason: Exception | None) -> None: ...

    def on_packet(self, link: Link, packet: Packet) -> None: ...


class Link:
    """Keeps one connection to ``host:port`` alive until :meth:`stop`.

    Each state change is logged once: a server that stays down for an hour
    logs ``server.down`` once and ``server.up`` when it returns, not one line
    per attempt.
    """

    def __init__(
        self,
        host: str,
        port: int,
        owner: LinkOwner,
        *,
        max_packet_size: int,
        connect_timeout: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.name = f"{host}:{port}"
        self.owner = owner
        self.stream: PacketStream | None = None
        self.reconnects = 0
        self._max_packet_size = max_packet_size
        self._connect_timeout = connect_timeout
        self._backoff = backoff or Backoff()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self.stream is not None and self.stream.is_open

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"link {self.name}")

    async def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        self._stopping = True
        self._wake.set()
        if self.stream is not None:
            self.stream.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def close(self) -> None:
        """Close the connection (flushing what is queued) and do not reconnect.

        The synchronous half of :meth:`stop`: a draining worker leaves a server
        for good, without logging it as down or coming back during the grace
        period.
        """
        self._stopping = True
        self._wake.set()
        if self.stream is not None:
            self.stream.close()

    def reset(self, reason: Exception) -> None:
        """Drop the connection (e.g. after a protocol error); it reconnects after a backoff delay."""
        if self.stream is not None:
            self.stream.abort(reason)

    async def _run(self) -> None:
        was_down = False
        while not self._stopping:
            stream = await self._connect(log_failure=not was_down)
            if stream is None:
                was_down = True
                await self._sleep(self._backoff.next_delay())
                continue
            log.info("server.up", server=self.name, attempts=self._backoff.attempts + 1)
            was_down = False
            up_since = time.monotonic()
            self.stream = stream
            self.owner.link_up(self, stream)
            reason = await stream.closed
            self.stream = None
            self.owner.link_down(self, reason)
            # Only a connection that stayed up a while shows the server is
            # healthy.  Resetting on connect would retry a server that accepts
            # and then drops or garbles every connection at the minimum delay
            # forever (measured: 25 reconnects and log lines a second).
            if time.monotonic() - up_since >= min(self._backoff.maximum, _STABLE_AFTER):
                self._backoff.reset()
            if self._stopping:
                break
            self.reconnects += 1
            log.warning("server.down", server=self.name, reason=_describe(reason))
            was_down = True
            # A server that accepts and then drops us at once must not be hammered.
            await self._sleep(self._backoff.next_delay())

    async def _connect(self, *, log_failure: bool) -> PacketStream | None:
        loop = asyncio.get_running_loop()

        def factory() -> PacketStream:
            return PacketStream(lambda p: self.owner.on_packet(self, p), max_packet_size=self._max_packet_size)

        try:
            async with asyncio.timeout(self._connect_timeout):
                _, stream = await loop.create_connection(factory, self.host, self.port)
        except (OSError, TimeoutError) as e:
            if log_failure:
                log.warning("server.down", server=self.name, reason=_describe(e))
            return None
        return stream

    async def _sleep(self, delay: float) -> None:
        if self._stopping:  # stop() came during a connect attempt: its wake-up must not be lost
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()


def _describe(reason: BaseException | None) -> str:
    if reason is None:
        return "closed by server"
    text = str(reason) or type(reason).__name__
    return f"{type(reason).__name__}: {text}" if isinstance(reason, RemoteProtocolError) else text
