"""The one transport: PacketStream, Endpoint and Link, against a real gearmand.

A gearmand stopped with SIGSTOP is a real server gone silent: the kernel
still accepts and acknowledges bytes, nothing answers, exactly like a host
that vanished behind a stateful firewall.  That is how the heartbeat and the
back-pressure are tested here; only garbage needs a fake peer
(tests/test_fake_peer.py).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from gearmand import Gearmand, free_port

from gearworker.errors import ConnectionLost, NoServerAvailable, RemoteProtocolError
from gearworker.protocol import Packet, PacketType, encode_request
from gearworker.transport import HEARTBEAT, Endpoint, Link, PacketStream, StreamOptions

T = PacketType


async def lost(receiver: Collector) -> list[Exception | None]:
    """What connection_lost got, once it ran: the transport calls it a loop turn after ``closed`` is set."""
    async with asyncio.timeout(5):
        while not receiver.lost:
            await asyncio.sleep(0.01)
    return receiver.lost


class Collector:
    """A Receiver that keeps what it gets."""

    def __init__(self) -> None:
        self.packets: list[Packet] = []
        self.lost: list[Exception | None] = []
        self.got = asyncio.Event()

    def packet_received(self, packet: Packet) -> None:
        self.packets.append(packet)
        self.got.set()

    def connection_lost(self, reason: Exception | None) -> None:
        self.lost.append(reason)


@contextmanager
def stopped(g: Gearmand) -> Iterator[None]:
    """gearmand frozen (SIGSTOP): connections stay open, nothing is answered."""
    assert g.proc is not None
    g.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        g.proc.send_signal(signal.SIGCONT)


async def test_packets_reach_the_receiver_and_the_heartbeat_reply_does_not(gearmand: Gearmand) -> None:
    """ECHO_RES of our own heartbeat is consumed by the stream; any other ECHO_RES is passed up."""
    receiver = Collector()
    stream = await Endpoint(gearmand.address, StreamOptions()).dial(receiver)
    stream.send(encode_request(T.ECHO_REQ, HEARTBEAT) + encode_request(T.ECHO_REQ, b"mine"))
    await asyncio.wait_for(receiver.got.wait(), 5)
    await asyncio.sleep(0.05)
    assert [(p.type, p.args) for p in receiver.packets] == [(T.ECHO_RES, (b"mine",))]
    stream.close()
    await asyncio.wait_for(stream.closed, 5)
    assert await lost(receiver) == [None]


async def test_sockets_get_nodelay_and_keepalive_as_configured(gearmand: Gearmand) -> None:
    """TCP_NODELAY always; SO_KEEPALIVE with the idle, interval and count settings."""
    options = StreamOptions(keepalive_idle=7, keepalive_interval=3, keepalive_count=4)
    stream = await Endpoint(gearmand.address, options).dial(Collector())
    transport = stream._transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
    stream.close()


async def test_a_silent_server_is_declared_dead_within_interval_plus_timeout(gearmand: Gearmand) -> None:
    """No byte for heartbeat_interval: ECHO_REQ; none within heartbeat_timeout: ConnectionLost, connection dropped."""
    receiver = Collector()
    options = StreamOptions(heartbeat_interval=0.3, heartbeat_timeout=0.3)
    started = time.monotonic()  # before the dial: the silence is counted from the connection's first moment
    stream = await Endpoint(gearmand.address, options).dial(receiver)
    with stopped(gearmand):
        reason = await asyncio.wait_for(stream.closed, 5)
        took = time.monotonic() - started
    assert isinstance(reason, ConnectionLost) and "did not answer a heartbeat" in str(reason)
    assert isinstance((await lost(receiver))[0], ConnectionLost)
    assert took >= 0.5  # never before interval + timeout (the bound itself is the wait_for above)


async def test_a_live_idle_connection_answers_heartbeats_and_stays_up(gearmand: Gearmand) -> None:
    """An idle connection to a live server pings, gets its answer, and is not dropped."""
    receiver = Collector()
    # A timeout far above the answer's time (it was 0.2 s), so that a stalled test process on a busy
    # CI machine cannot make a live server look dead; that the answers come is counted instead.
    # A ping waits for its timeout before the next: one ping a second here.
    options = StreamOptions(heartbeat_interval=0.1, heartbeat_timeout=1.0)
    stream = await Endpoint(gearmand.address, options).dial(receiver)
    heard: set[float] = set()
    for _ in range(125):  # 2.5 s: pings at about 0.1, 1.1 and 2.1 s, each answer a new time of the last byte heard
        await asyncio.sleep(0.02)
        heard.add(stream._heard_at)
    assert len(heard) >= 3, f"only {len(heard) - 1} heartbeats answered in 2.5 s"
    assert stream.is_open and not stream.closed.done()
    assert receiver.packets == []  # heartbeat replies are not the receiver's business
    stream.close()


async def test_a_receiver_protocol_error_drops_the_connection_with_that_reason(gearmand: Gearmand) -> None:
    """A receiver raising RemoteProtocolError: the stream aborts and hands the error to connection_lost."""

    class Strict(Collector):
        def packet_received(self, packet: Packet) -> None:
            raise RemoteProtocolError(f"did not expect {packet.type.name}")

    receiver = Strict()
    stream = await Endpoint(gearmand.address, StreamOptions()).dial(receiver)
    stream.send(encode_request(T.ECHO_REQ, b"x"))
    reason = await asyncio.wait_for(stream.closed, 5)
    assert isinstance(reason, RemoteProtocolError)
    assert await lost(receiver) == [reason]
    with pytest.raises(ConnectionLost):
        stream.send(b"more")


async def test_a_full_send_buffer_pauses_writers_until_it_drains(gearmand: Gearmand) -> None:
    """Many large writes to a server that does not read: paused; after it reads again, writable() returns."""
    stream = await Endpoint(gearmand.address, StreamOptions()).dial(Collector())
    chunk = encode_request(T.ECHO_REQ, b"x" * (1 << 20))
    with stopped(gearmand):
        for _ in range(64):
            stream.send(chunk)
            await asyncio.sleep(0)
            if stream.paused:
                break
        assert stream.paused
        waiting = asyncio.ensure_future(stream.writable())
        await asyncio.sleep(0.1)
        assert not waiting.done()
    await asyncio.wait_for(waiting, 20)
    stream.close()


async def test_dial_failures_name_the_server_and_the_cause() -> None:
    """Refused, and a TLS handshake against a plaintext port: NoServerAvailable with the reason, no fallback."""
    port = free_port()
    with pytest.raises(NoServerAvailable, match=rf"127\.0\.0\.1:{port}.*(refused|Connect call failed)"):
        await Endpoint(f"127.0.0.1:{port}", StreamOptions(connect_timeout=2)).dial(Collector())


async def test_tls_to_a_plaintext_server_fails_clearly(gearmand: Gearmand) -> None:
    """gearmand 1.1.20 speaks plaintext: a TLS dial fails as TLS, naming the server, and sends no job bytes."""
    context = ssl.create_default_context()
    options = StreamOptions(ssl=context, connect_timeout=3)
    with pytest.raises(NoServerAvailable, match=rf"{gearmand.address}") as info:
        await Endpoint(gearmand.address, options).dial(Collector())
    assert "TLS" in str(info.value)


async def test_a_link_reconnects_after_the_server_restarts_and_calls_on_up_again(gearmand: Gearmand) -> None:
    """Link: on_up per connection, on_down when it goes, a new connection after the backoff."""
    ups: list[PacketStream] = []
    downs: list[Exception | None] = []
    options = StreamOptions(reconnect_min=0.05, reconnect_max=0.2)
    link = Link(Endpoint(gearmand.address, options), Collector(), on_up=ups.append, on_down=downs.append)
    link.start()
    try:
        while not ups:
            await asyncio.sleep(0.01)
        gearmand.restart()
        for _ in range(500):
            if len(ups) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(ups) == 2 and len(downs) == 1 and link.connected and link.reconnects == 1
    finally:
        await asyncio.wait_for(link.stop(), 5)
    assert not link.connected


async def test_stopping_a_link_to_a_hung_server_drops_the_connection_when_its_timeout_runs_out(
    gearmand: Gearmand,
) -> None:
    """stop(timeout=) against a server that takes nothing (SIGSTOPped, more queued than the sockets hold):
    the clean close would wait for the queue to drain, forever with the heartbeat off; past the timeout the
    connection is dropped and stop() returns."""
    ups: list[PacketStream] = []
    downs: list[Exception | None] = []
    options = StreamOptions(heartbeat_interval=0, keepalive_idle=0)
    link = Link(Endpoint(gearmand.address, options), Collector(), on_up=ups.append, on_down=downs.append)
    link.start()
    while not ups:
        await asyncio.sleep(0.01)
    with stopped(gearmand):
        ups[0].send(encode_request(T.ECHO_REQ, b"x" * (64 * 1024 * 1024)))
        await asyncio.sleep(0.2)  # the socket buffers fill up; the rest stays queued in the transport
        started = time.monotonic()
        await asyncio.wait_for(link.stop(timeout=0.5), 10)
        took = time.monotonic() - started
    print(f"stop(timeout=0.5) took {took:.2f} s")
    assert took < 5
    assert not link.connected and len(downs) == 1


async def test_a_stopped_link_does_not_reconnect(gearmand: Gearmand) -> None:
    """close() leaves for good: no reconnect, even while the server is up."""
    ups: list[PacketStream] = []
    link = Link(
        Endpoint(gearmand.address, StreamOptions(reconnect_min=0.01, reconnect_max=0.02)),
        Collector(),
        on_up=ups.append,
        on_down=lambda reason: None,
    )
    link.start()
    while not ups:
        await asyncio.sleep(0.01)
    link.close()
    await asyncio.sleep(0.3)
    assert len(ups) == 1 and not link.connected
    await link.stop()
