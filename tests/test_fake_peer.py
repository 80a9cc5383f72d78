"""A job server that misbehaves, which a real gearmand cannot be made to do.

A fake peer sends garbage, an oversize length header and an abrupt close: the
connection is reset and re-established, the process lives, memory stays
bounded.

The worker gets two servers: the fake (see ``fakepeer.FakeServer``) and a real
gearmand.  After each misbehaviour the worker must reconnect to the fake
(a new connection that registers with CAN_DO again), keep serving the real
gearmand, keep its memory bounded, and log one line per reset rather than a
flood.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from fakepeer import FakeServer, PacketSocket, fake_server, reset, run_gearman_cli
from gearmand import Gearmand
from support import WorkerProcess, start_worker, wait_until

from gearworker.protocol import PacketType, encode, response

T = PacketType
pytestmark = pytest.mark.timeout(90)

FAST_RECONNECT = {"GEARWORKER_RECONNECT_MIN": "0.05", "GEARWORKER_RECONNECT_MAX": "0.5"}
RSS_GROWTH_LIMIT = 48 * 1024 * 1024
HEADER = struct.Struct(">4sII")
ASSIGN_ECHO = response(T.JOB_ASSIGN_UNIQ, b"H:fake:1", b"echo", b"u-1", b"from the fake")


# -- misbehaviours: each runs on the worker's first connection to the fake ------


def garbage(conn: PacketSocket) -> None:
    conn.wait_for(T.CAN_DO)
    conn.send(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not gearman\r\n" * 50)
    conn.wait_closed()


def oversize_length(conn: PacketSocket) -> None:
    """A header announcing 4 GiB, then a stream of what it announced: nothing of it may be buffered."""
    conn.wait_for(T.CAN_DO)
    conn.send(HEADER.pack(b"\0RES", T.JOB_ASSIGN_UNIQ, 0xFFFFFFFF))
    conn.sock.settimeout(10)
    chunk = b"\x01" * (1 << 20)
    try:
        for _ in range(64):
            conn.sock.sendall(chunk)
    except OSError:
        pass  # the worker cut us off, as it should
    conn.wait_closed()


def unknown_packet_type(conn: PacketSocket) -> None:
    conn.wait_for(T.CAN_DO)
    conn.send(HEADER.pack(b"\0RES", 9999, 0))
    conn.wait_closed()


def close_mid_packet(conn: PacketSocket) -> None:
    conn.wait_for(T.CAN_DO)
    conn.send(encode(ASSIGN_ECHO)[:20])
    time.sleep(0.1)
    conn.sock.close()


def reset_mid_packet(conn: PacketSocket) -> None:
    conn.wait_for(T.CAN_DO)
    conn.send(encode(ASSIGN_ECHO)[:20])
    time.sleep(0.1)
    reset(conn)


def noop_flood(conn: PacketSocket) -> None:
    """200,000 NOOPs: the worker must not answer each with a grab, and must still run a job afterwards."""
    conn.wait_for(T.CAN_DO)
    conn.send(encode(response(T.NOOP)) * 200_000)
    conn.send(ASSIGN_ECHO)  # answers one of the grabs sent at connect
    done = conn.wait_for(T.WORK_COMPLETE)
    assert done.args == (b"H:fake:1", b"from the fake"), done
    grabs = conn.count(T.GRAB_JOB_UNIQ)
    assert grabs <= 16, f"{grabs} grabs in answer to a NOOP flood"
    conn.close()


def unregistered_function(conn: PacketSocket) -> None:
    """A job for a function the worker never registered: it must fail that job, not hang it."""
    conn.wait_for(T.CAN_DO)
    conn.send(response(T.JOB_ASSIGN_UNIQ, b"H:fake:2", b"no_such_function", b"u-2", b"data"))
    warning = conn.wait_for(T.WORK_WARNING)
    fail = conn.wait_for(T.WORK_FAIL)
    assert warning.args[0] == b"H:fake:2" and b"no handler" in warning.args[1], warning
    assert fail.args == (b"H:fake:2",), fail
    conn.close()


def assign_without_grab(conn: PacketSocket) -> None:
    """NO_JOB to every grab until the worker sleeps, then a job nobody asked for: a protocol violation."""
    conn.wait_for(T.CAN_DO)
    while (packet := conn.recv()).type is not T.PRE_SLEEP:
        if packet.type is T.GRAB_JOB_UNIQ:
            conn.send(response(T.NO_JOB))
    conn.send(ASSIGN_ECHO)
    conn.wait_closed()
    assert conn.count(T.WORK_COMPLETE) == 0


# name: (script, expected "server.down" reason, expected server.protocol_error lines)
SCENARIOS: dict[str, tuple[Callable[[PacketSocket], None], str, int]] = {
    "garbage": (garbage, "bad magic", 0),
    "oversize_length": (oversize_length, "exceeds", 0),
    "unknown_packet_type": (unknown_packet_type, "unknown packet type 9999", 0),
    "close_mid_packet": (close_mid_packet, "closed by server", 0),
    "reset_mid_packet": (reset_mid_packet, "", 0),
    "noop_flood": (noop_flood, "closed by server", 0),
    "unregistered_function": (unregistered_function, "closed by server", 0),
    "assign_without_grab": (assign_without_grab, "without an outstanding GRAB_JOB", 1),
}


@pytest.fixture
def echo_handlers(tmp_path: Path) -> Path:
    """One async handler: one connection per server, so each reset is one reconnect."""
    folder = tmp_path / "handlers"
    folder.mkdir()
    (folder / "only_echo.py").write_text(
        "from gearworker import handler\n\n@handler('echo')\nasync def echo(job):\n    return job.workload\n"
    )
    return folder


def worker_on(fake: FakeServer, gearmand: Gearmand, handlers: Path) -> WorkerProcess:
    """A worker on the fake and the real server, registered with the real one."""
    servers = [fake.address, gearmand.address]
    return start_worker(servers, handlers=handlers, env=FAST_RECONNECT, wait_for="echo", gearmand=gearmand)


def events_for(w: WorkerProcess, server: str) -> list[dict[str, Any]]:
    return [r for r in w.log_records() if r.get("server") == server]


def registered(conn: PacketSocket) -> bool:
    return any(p.type is T.CAN_DO and p.args == (b"echo",) for p in list(conn.received))


def rss(w: WorkerProcess) -> int:
    return int(psutil.Process(w.pid).memory_info().rss)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_misbehaving_server_is_reset_and_reconnected(name: str, gearmand: Gearmand, echo_handlers: Path) -> None:
    """After the misbehaviour: one reconnect that registers again, one log line, the real server still served."""
    script, reason, protocol_errors = SCENARIOS[name]
    go = threading.Event()

    def gated(conn: PacketSocket) -> None:
        go.wait(30)  # measure the worker's memory before the misbehaviour
        script(conn)

    with fake_server(gated) as fake:
        w = worker_on(fake, gearmand, echo_handlers)
        try:
            baseline = rss(w)
            go.set()
            second = fake.wait_connections(2)
            wait_until(lambda: registered(second), what="CAN_DO on the new connection")
            assert fake.errors == []
            assert registered(fake.connections[0])
            assert run_gearman_cli(gearmand.port, "echo", b"real server")[1] == b"real server"
            assert rss(w) - baseline < RSS_GROWTH_LIMIT
            time.sleep(0.3)  # time enough for a reconnect loop, if there were one
            assert len(fake.connections) == 2
            records = events_for(w, fake.address)
            downs = [r for r in records if r["event"] == "server.down"]
            assert len(downs) == 1, records
            assert reason in str(downs[0]["reason"]), downs
            assert len([r for r in records if r["event"] == "server.protocol_error"]) == protocol_errors, records
            assert w.proc is not None and w.proc.poll() is None
        finally:
            w.stop()


def test_server_that_always_sends_garbage_is_not_hammered(gearmand: Gearmand, echo_handlers: Path) -> None:
    """A server that garbles every connection gets reconnects spaced by the backoff, not a hot loop or a log flood."""
    with fake_server(*[garbage] * 1000) as fake:
        w = worker_on(fake, gearmand, echo_handlers)
        try:
            baseline = rss(w)
            time.sleep(3)
            connections = len(fake.connections)
            assert run_gearman_cli(gearmand.port, "echo", b"real server")[1] == b"real server"
            assert 2 <= connections <= 20, f"{connections} connections in 3 s"
            # Read the log before counting connections again: each server.down follows its
            # connection, so read in this order the log can never be ahead.
            downs = [r for r in events_for(w, fake.address) if r["event"] == "server.down"]
            assert len(downs) <= len(fake.connections)
            assert rss(w) - baseline < RSS_GROWTH_LIMIT
            assert w.proc is not None and w.proc.poll() is None
        finally:
            w.stop()
