"""Protocol peers for the tests, for what real ones cannot be made to do.

:class:`FakeServer` is a tiny threaded "gearmand" that accepts worker
connections and runs a script per connection: it can send garbage, forged
headers, floods or unsolicited jobs, none of which a real gearmand does.
:class:`RawClient` is a blocking client speaking the binary protocol directly,
so a test sees every packet (handles, order) rather than what a client
library makes of them.  :func:`gearman_cli` runs the ``gearman`` command from
gearman-tools, a client nobody here wrote.

All of them use the project's sans-IO codec, which has its own tests.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gearworker.protocol import Magic, Packet, PacketType, Parser, encode, request, response

T = PacketType


class PeerClosed(Exception):
    """The other side closed (or reset) the connection."""


class PacketSocket:
    """A blocking socket that reads whole packets."""

    def __init__(self, sock: socket.socket, expect: Magic) -> None:
        self.sock = sock
        self.parser = Parser(expect=expect, max_packet_size=1 << 30)
        self.pending: list[Packet] = []
        self.received: list[Packet] = []  # every packet ever read, in order
        self.eof = False

    def recv(self, timeout: float = 10.0) -> Packet:
        """The next packet; raises :class:`PeerClosed` at EOF, TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            if self.eof:
                raise PeerClosed()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                raise TimeoutError("no packet") from None
            except OSError as e:  # reset by peer
                self.eof = True
                raise PeerClosed() from e
            if not data:
                self.eof = True
                raise PeerClosed()
            packets = self.parser.feed(data)
            self.pending += packets
            self.received += packets
        return self.pending.pop(0)

    def wait_for(self, ptype: PacketType, timeout: float = 10.0) -> Packet:
        """Read until a packet of ``ptype`` arrives (others are kept in :attr:`received`)."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.recv(max(0.01, deadline - time.monotonic()))
            if packet.type is ptype:
                return packet

    def wait_closed(self, timeout: float = 10.0) -> None:
        """Read (and keep) packets until the peer closes."""
        with contextlib.suppress(PeerClosed):
            while True:
                self.recv(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Close as a server does that reads all it is sent: FIN, then read until the peer closes too.

        A socket closed with unread bytes waiting makes Linux send a reset: a
        worker that wrote a grab just after the result this script waited for
        would log "reset by peer", not "closed by server".
        """
        self.sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(TimeoutError):
            self.wait_closed(timeout)
        self.sock.close()

    def send(self, *items: Packet | bytes) -> None:
        self.sock.sendall(b"".join(i if isinstance(i, bytes) else encode(i) for i in items))

    def count(self, ptype: PacketType) -> int:
        return sum(1 for p in self.received if p.type is ptype)


# -- the fake job server --------------------------------------------------

Script = Callable[[PacketSocket], None]


def idle(conn: PacketSocket) -> None:
    """Behave like an idle gearmand: NO_JOB to every grab, NOOP never; read until the worker leaves."""
    with contextlib.suppress(PeerClosed, OSError):
        while True:
            try:
                packet = conn.recv(timeout=3600)
            except TimeoutError:
                continue
            if packet.type in (T.GRAB_JOB, T.GRAB_JOB_UNIQ, T.GRAB_JOB_ALL):
                conn.send(response(T.NO_JOB))


@dataclass
class FakeServer:
    """Accepts worker connections; connection *i* runs ``scripts[i]``, later ones :func:`idle`."""

    scripts: list[Script] = field(default_factory=list)
    connections: list[PacketSocket] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._accepted = threading.Condition()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        thread = threading.Thread(target=self._accept, name="fake gearmand", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def _accept(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = PacketSocket(sock, Magic.REQ)
            with self._accepted:
                index = len(self.connections)
                self.connections.append(conn)
                self._accepted.notify_all()
            script = self.scripts[index] if index < len(self.scripts) else idle
            thread = threading.Thread(target=self._run, args=(script, conn), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, script: Script, conn: PacketSocket) -> None:
        try:
            script(conn)
        except (PeerClosed, ConnectionError):
            pass
        except BaseException as e:  # reported by the test through .errors
            self.errors.append(e)
        finally:
            with contextlib.suppress(OSError):
                conn.sock.close()

    def wait_connections(self, n: int, timeout: float = 15.0) -> PacketSocket:
        """Wait until ``n`` connections were accepted; return the ``n``-th."""
        with self._accepted:
            if not self._accepted.wait_for(lambda: len(self.connections) >= n, timeout):
                raise TimeoutError(f"{len(self.connections)} connections accepted, waited for {n}")
            return self.connections[n - 1]

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.sock.close()


@contextlib.contextmanager
def fake_server(*scripts: Script) -> Iterator[FakeServer]:
    server = FakeServer(list(scripts)).start()
    try:
        yield server
    finally:
        server.stop()


def reset(conn: PacketSocket) -> None:
    """Close with a TCP RST rather than a FIN."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.sock.close()


# -- clients --------------------------------------------------------------


class RawClient:
    """A blocking Gearman client on one connection, seeing every packet."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.conn = PacketSocket(socket.create_connection((host, port), timeout=10), Magic.RES)

    def submit(self, function: str, payload: bytes, unique: bytes = b"", *, ptype: PacketType = T.SUBMIT_JOB) -> bytes:
        """Submit one job and return its handle."""
        self.conn.send(request(ptype, function.encode(), unique, payload))
        return self.conn.wait_for(T.JOB_CREATED).args[0]

    def submit_many(self, jobs: list[tuple[str, bytes]]) -> list[bytes]:
        """Send every SUBMIT_JOB in one write, then read the handles (JOB_CREATED come back in order)."""
        self.conn.send(*(request(T.SUBMIT_JOB, f.encode(), b"", p) for f, p in jobs))
        return [self.conn.wait_for(T.JOB_CREATED).args[0] for _ in jobs]

    def results(self, handles: list[bytes], timeout: float = 60.0) -> dict[bytes, tuple[PacketType, bytes]]:
        """Wait for every handle's end: {handle: (WORK_COMPLETE|WORK_FAIL|WORK_EXCEPTION, data)}."""
        wanted = set(handles)
        done: dict[bytes, tuple[PacketType, bytes]] = {}

        def note(packet: Packet) -> None:
            if packet.args and packet.args[0] in wanted:
                if packet.type in (T.WORK_COMPLETE, T.WORK_EXCEPTION):
                    done[packet.args[0]] = (packet.type, packet.args[1])
                elif packet.type is T.WORK_FAIL:
                    done[packet.args[0]] = (packet.type, b"")

        # A quick job's result can come before a later job's JOB_CREATED, and
        # submit_many's waits read past it: look at what was read already first.
        for packet in self.conn.received:
            note(packet)
        deadline = time.monotonic() + timeout
        while wanted - done.keys():
            note(self.conn.recv(max(0.01, deadline - time.monotonic())))
        return done

    def close(self) -> None:
        self.conn.sock.close()


def gearman_cli(
    port: int, function: str, payload: bytes, *, background: bool = False, unique: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``gearman -f FUNCTION`` with ``payload`` on stdin; ``.communicate()`` gives (result, errors)."""
    cmd = ["gearman", "-h", "127.0.0.1", "-p", str(port), "-f", function]
    if background:
        cmd.append("-b")
    if unique is not None:
        cmd += ["-u", unique]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(payload)
    proc.stdin.close()
    proc.stdin = None  # so that communicate() does not try to write again
    return proc


def run_gearman_cli(port: int, function: str, payload: bytes, *, timeout: float = 60.0) -> tuple[int, bytes, bytes]:
    """Run one foreground job with the ``gearman`` CLI: (exit code, stdout, stderr)."""
    proc = gearman_cli(port, function, payload)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err
