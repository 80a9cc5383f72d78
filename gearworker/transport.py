"""The one asyncio adapter between a socket and the sans-IO protocol, for workers and clients alike.

:class:`PacketStream` moves bytes between one TCP (or TLS) connection and a
:class:`~gearworker.protocol.Parser`: it batches writes, honours the socket's
back-pressure, sets TCP_NODELAY and TCP keepalive, and sends a heartbeat on a
silent connection.  It knows nothing about jobs: every packet goes to its
:class:`Receiver` (the worker's connection wiring, or the client's router).

:class:`Endpoint` dials one server with a timeout and a reconnect backoff
with jitter; :class:`Link` keeps a stream to it connected until stopped (the
worker's connections).  The client dials lazily through the same
:class:`Endpoint`.

Why a heartbeat: the Gearman protocol has no liveness.  A server whose host
vanishes without a FIN leaves a connection that looks alive forever (gearmand
#79, #105, #150), so a worker would wait for jobs that never come and a
client for results that never arrive.  Every connection that has been silent
for ``heartbeat_interval`` sends ECHO_REQ; if nothing at all arrives within
``heartbeat_timeout`` after that, the connection is declared dead and
dropped.  A connection that receives anything (a job, a NOOP) costs nothing:
a read only stores the loop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from .address import parse_address
from .backoff import Backoff
from .errors import ConnectionLost, NoServerAvailable, RemoteProtocolError
from .protocol import DEFAULT_MAX_PACKET_SIZE, Magic, Packet, PacketType, Parser, encode, encode_request

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["Endpoint", "Link", "PacketStream", "Receiver", "StreamOptions", "WakeHook", "tls_context"]

log = structlog.get_logger("gearworker.transport")

#: Seconds a connection must last before the reconnect backoff starts again from its minimum.
_STABLE_AFTER = 2.0

#: The ECHO_REQ payload of our heartbeats; its ECHO_RES is consumed here, never passed up.
HEARTBEAT = b"gearworker-heartbeat"
_PING = encode_request(PacketType.ECHO_REQ, HEARTBEAT)
_ECHO_RES = PacketType.ECHO_RES
#: The NOOP that wakes a sleeping worker, as it arrives: header only.
_NOOP = encode(Packet(PacketType.NOOP, (), Magic.RES))


class Receiver(Protocol):
    """What a :class:`PacketStream` hands its packets to."""

    def packet_received(self, packet: Packet) -> None:
        """One packet from the server.  Raise :class:`RemoteProtocolError` to drop the connection."""

    def connection_lost(self, reason: Exception | None) -> None:
        """The connection is gone (``None``: closed cleanly by either side)."""


#: A worker's short way for the NOOP that wakes it: the same as ``packet_received`` of a NOOP,
#: but it returns what to send instead of sending it (see :meth:`PacketStream.data_received`).
WakeHook = Callable[[], bytes]


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How to open and watch a connection; one value shared by every connection of a process."""

    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    connect_timeout: float = 5.0
    #: Seconds of silence before an ECHO_REQ; 0 turns the heartbeat off.
    heartbeat_interval: float = 10.0
    #: Seconds to wait for any byte after an ECHO_REQ before declaring the connection dead.
    heartbeat_timeout: float = 10.0
    #: TCP keepalive: idle seconds before the first probe (0: off), seconds between probes, probes.
    keepalive_idle: int = 10
    keepalive_interval: int = 5
    keepalive_count: int = 3
    reconnect_min: float = 0.1
    reconnect_max: float = 10.0
    ssl: ssl.SSLContext | None = None
    #: The name checked against the server's certificate; None: the host of its address.
    server_hostname: str | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> StreamOptions:
        """The options the settings describe (TLS context built, and its files checked, here)."""
        return cls(
            max_packet_size=s.max_packet_size,
            connect_timeout=s.connect_timeout,
            heartbeat_interval=s.heartbeat_interval,
            heartbeat_timeout=s.heartbeat_timeout,
            keepalive_idle=s.keepalive_idle,
            keepalive_interval=s.keepalive_interval,
            keepalive_count=s.keepalive_count,
            reconnect_min=s.reconnect_min,
            reconnect_max=s.reconnect_max,
            ssl=tls_context(s) if s.tls else None,
            server_hostname=s.tls_server_hostname,
        )


def tls_context(s: Settings) -> ssl.SSLContext:
    """A client TLS context: the CA file (else the system's CAs), an optional client certificate.

    Hostname checking stays on.  A connection never falls back to plaintext:
    a failed handshake is a failed connection, retried with backoff and logged
    with its TLS reason.
    """
    from .errors import ConfigError

    try:
        context = ssl.create_default_context(cafile=s.tls_ca_file)
        if s.tls_cert_file:
            context.load_cert_chain(s.tls_cert_file, s.tls_key_file)
    except (OSError, ssl.SSLError) as e:
        setting = "tls_cert_file" if s.tls_cert_file and not isinstance(e, FileNotFoundError) else "tls_ca_file"
        raise ConfigError(f"cannot load TLS files: {e}", file=s.origin(setting), setting=setting) from e
    return context


def _at_most_one_job(packets: list[Packet]) -> bool:
    """At most one of ``packets`` carries arguments: one job at most (NOOP and NO_JOB carry none)."""
    seen = False
    for packet in packets:
        if packet.args:
            if seen:
                return False  # a batch: its answers go out together
            seen = True
    return True


class PacketStream(asyncio.Protocol):
    """One connection's byte pump.

    Writes made during one turn of the event loop are joined and written once
    at the end of that turn: a worker finishing 50 jobs in one turn sends one
    segment, not 50 (measured: a third fewer syscalls per job in the echo
    benchmark).
    """

    def __init__(
        self, receiver: Receiver, options: StreamOptions, *, name: str = "", woken: WakeHook | None = None
    ) -> None:
        self.name = name
        self._receiver = receiver
        #: The short way for the lone NOOP that wakes a sleeping worker (see data_received); a
        #: worker's connection passes it, a client's does not.
        self._woken = woken
        self._options = options
        self._parser = Parser(expect=Magic.RES, max_packet_size=options.max_packet_size)
        self._transport: asyncio.Transport | None = None
        #: Connected and neither closing nor closed: what may still be sent on.  A plain
        #: attribute, not a property asking the transport: it is read several times per job.
        self.is_open = False
        self._out: list[bytes] = []
        self._reading = False  # inside data_received, which flushes at its end
        self._lone = False  # inside data_received, whose packets bring at most one job
        self._loop = asyncio.get_running_loop()
        self._drained: asyncio.Future[None] | None = None  # set while the socket's send buffer is full
        self._heard_at = 0.0  # loop time of the last byte received
        self._ping_at = 0.0  # loop time of the outstanding heartbeat, 0 when none
        self._timer: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[Exception | None] = self._loop.create_future()

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = typing.cast(asyncio.Transport, transport)
        self.is_open = True
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            _tune_socket(sock, self._options)
        self._heard_at = self._loop.time()
        if self._options.heartbeat_interval > 0:
            self._timer = self._loop.call_later(self._options.heartbeat_interval, self._check_heartbeat)

    def data_received(self, data: bytes) -> None:
        if data == _NOOP and self._woken is not None and not self._parser.buffered:
            # The NOOP that wakes a sleeping worker, alone in its read, as on every
            # lone job: its grab is written without the parser, the packet loop and
            # the queue.  Each call costs a microsecond or more here, where the caches
            # are cold after the quiet spell.  bench.calls: 10 -> 8 Python calls and
            # 10 -> 2 C calls; bench.reaction --gap-us 1000, wake -> answer, against
            # the tree before (gearworker-defaults-base, 6 rounds): 45.5 -> 31.5 us.
            grabs = self._woken()
            if grabs:
                self._send_now(grabs)
            self._heard_at = self._loop.time()
            return
        self._heard_at = self._loop.time()
        try:
            packets = self._parser.feed(data)
        except RemoteProtocolError as e:  # not Gearman at all: the reason is logged with server.down
            self.abort(e)
            return
        receive = self._receiver.packet_received
        self._reading = True
        self._lone = len(packets) == 1 or _at_most_one_job(packets)  # (no call for the lone NOOP that wakes us)
        try:
            for packet in packets:
                if self._transport is None:
                    return  # the receiver reset the connection mid-batch: ignore the rest
                if packet.type is _ECHO_RES and packet.args[0] == HEARTBEAT:
                    continue
                receive(packet)
        except RemoteProtocolError as e:  # well-formed packets that break the protocol's rules
            log.error("server.protocol_error", server=self.name, error=str(e))
            self.abort(e)
            return
        except BaseException:
            self._loop.call_soon(self._flush)  # a receiver's bug: what it queued still goes out
            raise
        finally:
            self._reading = self._lone = False
        # What these packets made us send (grabs, results) goes out now, not a
        # loop turn later: the answers to a read are already one batch.  Lone-job
        # p50 latency 1.54x -> 1.34-1.43x PHP's; tiny-job CPU per job unchanged
        # (10.3 vs 10.5 us, python -m bench).
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.is_open = False
        self._out.clear()
        if self._timer is not None:
            self._timer.cancel()
        self.resume_writing()  # wake writers waiting for buffer space: they see the connection closed
        reason = self.closed.result() if self.closed.done() else exc
        if not self.closed.done():
            self.closed.set_result(exc)
        self._receiver.connection_lost(reason)

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- used by the owner --------------------------------------------------
    @property
    def paused(self) -> bool:
        """The socket's send buffer is over its high-water mark: hold further writes."""
        return self._drained is not None

    async def writable(self) -> None:
        """Wait while the send buffer is full (many large payloads at once)."""
        while self._drained is not None and self._transport is not None:
            await asyncio.shield(self._drained)

    def send(self, data: bytes) -> None:
        """Queue ``data``; it is written at the end of this read, or of this loop turn."""
        if self._transport is None:
            raise ConnectionLost(f"connection to job server {self.name} is closed")
        if not self._out and not self._reading:  # a read flushes at its end: no callback needed
            self._loop.call_soon(self._flush)
        self._out.append(data)

    def send_result(self, data: bytes) -> None:
        """Queue a job's result; written at once if the read being handled brought no other job.

        A lone job's client is waiting: its result need not wait for the
        bookkeeping that follows it (after-hooks, limits, the next grabs),
        which then goes in a second write only if it has anything to send.
        Lone no-op jobs, in-process and with cold caches (bench.reaction's
        job -> result, reproduced by evicting 8 MiB between jobs): 35-37 ->
        17-24 us from the job's bytes to the write.  A read with many jobs
        still answers them all in one write.
        """
        if self._lone and self._transport is not None:
            self._send_now(data)
        else:
            self.send(data)

    def _send_now(self, data: bytes) -> None:
        """Write ``data`` now, behind what is already queued (the transport is open)."""
        assert self._transport is not None
        out = self._out
        if out:  # what was queued before it (a grab) goes first; its pending flush finds nothing
            out.append(data)
            data = b"".join(out)
            out.clear()
        self._transport.write(data)

    def _flush(self) -> None:
        if self._transport is None or not self._out:
            return
        out = self._out
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def close(self) -> None:
        """Flush what is queued, then close (a FIN: gearmand re-queues a worker's jobs)."""
        self.is_open = False
        if self._transport is not None:
            self._flush()
            self._transport.close()

    def abort(self, reason: Exception | None = None) -> None:
        """Drop the connection at once, discarding unsent data; ``reason`` reaches the receiver."""
        self.is_open = False
        if not self.closed.done():
            self.closed.set_result(reason)
        if self._transport is not None:
            self._transport.abort()

    # -- heartbeat ------------------------------------------------------------
    def _check_heartbeat(self) -> None:
        if self._transport is None:
            return
        now = self._loop.time()
        interval, timeout = self._options.heartbeat_interval, self._options.heartbeat_timeout
        if self._ping_at:
            if self._heard_at >= self._ping_at:
                self._ping_at = 0.0  # alive: fall through to the idle check
            elif now - self._ping_at >= timeout:
                silent = now - self._heard_at
                log.warning("server.dead", server=self.name, silent=round(silent, 1))
                self.abort(
                    ConnectionLost(
                        f"job server {self.name} did not answer a heartbeat: silent for "
                        f"{silent:.0f}s (heartbeat_interval={interval:g}, "
                        f"heartbeat_timeout={timeout:g})"
                    )
                )
                return
            else:
                self._timer = self._loop.call_at(self._ping_at + timeout, self._check_heartbeat)
                return
        idle_until = self._heard_at + interval
        if now < idle_until:
            self._timer = self._loop.call_at(idle_until, self._check_heartbeat)
            return
        self._ping_at = now
        self.send(_PING)
        self._timer = self._loop.call_at(now + timeout, self._check_heartbeat)


def _tune_socket(sock: socket.socket, options: StreamOptions) -> None:
    """Per-connection socket options; a platform that lacks one just goes without it."""
    with contextlib.suppress(OSError):  # a request/response protocol: never wait for Nagle
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if options.keepalive_idle <= 0:
        return
    # The kernel's own liveness probe, a backstop to the heartbeat: it also
    # catches a peer gone while we are the silent side, and costs no Python.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, options.keepalive_idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, options.keepalive_interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, options.keepalive_count)
        # Keepalive probes only an idle socket: with data unacknowledged (a
        # grab sent every idle_poll, a heartbeat) the kernel retransmits for
        # ~15 minutes instead (tcp_retries2).  Measured: with the heartbeat off,
        # a worker whose server vanished was still stuck after 140 s.  The user
        # timeout gives unacknowledged data the same bound as the probes.
        bound = options.keepalive_idle + options.keepalive_interval * options.keepalive_count
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, bound * 1000)


class Endpoint:
    """One job server's address, and how to dial it: timeout, TLS, backoff with jitter."""

    def __init__(self, address: str, options: StreamOptions) -> None:
        self.address = address
        self.host, self.port = parse_address(address)
        self.options = options
        self.backoff = Backoff(options.reconnect_min, max(options.reconnect_min, options.reconnect_max))

    async def dial(self, receiver: Receiver, *, woken: WakeHook | None = None) -> PacketStream:
        """Open a stream to the server; raise :class:`NoServerAvailable` naming the cause."""
        o = self.options
        loop = asyncio.get_running_loop()

        def factory() -> PacketStream:
            return PacketStream(receiver, o, name=self.address, woken=woken)

        try:
            async with asyncio.timeout(o.connect_timeout):
                if o.ssl is None:
                    _, stream = await loop.create_connection(factory, self.host, self.port)
                else:
                    _, stream = await loop.create_connection(
                        factory,
                        self.host,
                        self.port,
                        ssl=o.ssl,
                        server_hostname=o.server_hostname or self.host,
                        ssl_handshake_timeout=o.connect_timeout,
                    )
        except TimeoutError as e:
            raise NoServerAvailable(
                f"cannot connect to job server {self.address}: timed out after {o.connect_timeout:g}s"
            ) from e
        except ssl.SSLError as e:  # before OSError: it is one, and the TLS cause must show
            raise NoServerAvailable(f"TLS with job server {self.address} failed: {e.reason or e}") from e
        except OSError as e:
            why = e.strerror or str(e) or type(e).__name__
            if o.ssl is not None and not isinstance(e, ConnectionRefusedError):
                # The server took the connection, then dropped it in the handshake:
                # it does not speak TLS there (Debian's gearmand 1.1.20 is built without TLS: docs/gearmand.md).
                raise NoServerAvailable(
                    f"TLS with job server {self.address} failed: {type(e).__name__}: {why} "
                    "(the server closed the connection during the TLS handshake)"
                ) from e
            raise NoServerAvailable(f"cannot connect to job server {self.address}: {why}") from e
        return stream


class Link:
    """Keeps one stream to one server connected until :meth:`stop`.

    ``on_up`` runs with each new stream (register, start grabbing), ``on_down``
    when it is gone; ``woken`` is passed to each stream (a worker's wake hook).
    Each state change is logged once: a server that stays down for an hour
    logs ``server.down`` once and ``server.up`` when it returns, not one line
    per attempt.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        receiver: Receiver,
        *,
        on_up: Callable[[PacketStream], None],
        on_down: Callable[[Exception | None], None],
        woken: WakeHook | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.name = endpoint.address
        self.stream: PacketStream | None = None
        self.reconnects = 0
        self._receiver = receiver
        self._woken = woken
        self._on_up = on_up
        self._on_down = on_down
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self.stream is not None and self.stream.is_open

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"link {self.name}")

    async def stop(self, timeout: float | None = None) -> None:
        """Close the connection and stop reconnecting; past ``timeout`` seconds, drop it (:meth:`abort`).

        A clean close waits until what is queued has been written: a server
        that takes nothing (hung, SIGSTOPped, its host gone) would hold it
        until the heartbeat or TCP gives up, minutes with the heartbeat off.
        """
        self.close()
        if self._task is None:
            return
        # asyncio.wait: neither cancels the task nor hides a cancel of the caller.
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            log.warning("server.close_timeout", server=self.name, timeout=timeout)
            self.abort()
            await asyncio.wait({self._task})  # ends at its next turn: the stream is closed, or it was dialling

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

    def abort(self) -> None:
        """Drop the connection at once, discarding what is not yet written, and do not reconnect."""
        self._stopping = True
        self._wake.set()
        if self.stream is not None:
            self.stream.abort()
        elif self._task is not None:
            self._task.cancel()  # dialling: a connect may take connect_timeout

    async def _run(self) -> None:
        backoff = self.endpoint.backoff
        was_down = False
        while not self._stopping:
            try:
                stream = await self.endpoint.dial(self._receiver, woken=self._woken)
            except NoServerAvailable as e:
                if not was_down:
                    log.warning("server.down", server=self.name, reason=str(e))
                was_down = True
                await self._sleep(backoff.next_delay())
                continue
            log.info("server.up", server=self.name, attempts=backoff.attempts + 1)
            was_down = False
            up_since = time.monotonic()
            self.stream = stream
            self._on_up(stream)
            reason = await stream.closed
            self.stream = None
            self._on_down(reason)
            # Only a connection that stayed up a while shows the server is
            # healthy.  Resetting on connect would retry a server that accepts
            # and then drops or garbles every connection at the minimum delay
            # forever (measured: 25 reconnects and log lines a second).
            if time.monotonic() - up_since >= min(backoff.maximum, _STABLE_AFTER):
                backoff.reset()
            if self._stopping:
                break
            self.reconnects += 1
            log.warning("server.down", server=self.name, reason=_describe(reason))
            was_down = True
            # A server that accepts and then drops us at once must not be hammered.
            await self._sleep(backoff.next_delay())

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
