"""systemd's notify protocol, received on a real AF_UNIX datagram socket."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gearmand import Gearmand
from support import WorkerProcess, start_worker

from gearworker.app.systemd import Notifier, run_watchdog


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket standing in for systemd's NOTIFY_SOCKET."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``, decoded."""
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return messages


def test_messages_arrive_in_order_as_separate_datagrams(notify_socket: tuple[str, socket.socket]) -> None:
    """READY=1 (with STATUS), STATUS, WATCHDOG=1, STOPPING=1 arrive in the order sent, one datagram each."""
    path, sock = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("serving 5 functions")
    assert n.status("3 jobs in flight")
    assert n.watchdog()
    assert n.stopping("draining")
    assert received(sock) == [
        "READY=1\nSTATUS=serving 5 functions",
        "STATUS=3 jobs in flight",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=draining",
    ]
    n.close()


def test_status_text_is_kept_on_one_line(notify_socket: tuple[str, socket.socket]) -> None:
    """A newline in a status would start a new KEY=value assignment, so it is folded to a space."""
    path, sock = notify_socket
    n = Notifier(path)
    n.status("line one\nREADY=1")
    assert received(sock) == ["STATUS=line one READY=1"]


def test_abstract_socket_address_with_at_sign() -> None:
    """NOTIFY_SOCKET=@name means the abstract socket named name (a leading NUL for the kernel)."""
    name = f"gearworker-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_no_notify_socket_makes_every_call_a_no_op() -> None:
    """Outside systemd nothing is sent and nothing fails."""
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready("x") is False
    assert n.stopping() is False
    assert n.watchdog() is False
    assert n.watchdog_interval() is None


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    """If systemd's socket is gone the worker keeps running: the call returns False."""
    n = Notifier(str(tmp_path / "missing.sock"))
    assert n.ready() is False
    assert n.status("still fine") is False


def test_from_env_removes_the_variables_so_children_do_not_inherit_them(
    notify_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pool processes must not talk to systemd: from_env() unsets NOTIFY_SOCKET and WATCHDOG_* by default."""
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier.from_env()
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    assert n.watchdog_interval() == 2.0
    assert n.ready()
    assert received(sock) == ["READY=1"]


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid(
    notify_socket: tuple[str, socket.socket], env: dict[str, str], interval: float | None
) -> None:
    """WATCHDOG_USEC is honoured only when WATCHDOG_PID is unset or ours; pings come at half the interval."""
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket[0], **env})
    assert n.watchdog_interval() == interval


async def test_watchdog_pings_only_while_healthy(notify_socket: tuple[str, socket.socket]) -> None:
    """run_watchdog sends WATCHDOG=1 for each healthy() that is True and withholds it while False."""
    path, sock = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000"})  # 1 ms between checks
    answers = [True, True, False, False, True]
    calls = 0
    done = asyncio.Event()

    def healthy() -> bool:
        nonlocal calls
        calls += 1
        if calls >= len(answers):
            done.set()
        # Calls after the last answer (before the cancel lands) are unhealthy: no extra pings.
        return answers[calls - 1] if calls <= len(answers) else False

    task = asyncio.create_task(run_watchdog(n, healthy))
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert received(sock) == ["WATCHDOG=1"] * answers.count(True)


async def test_watchdog_task_returns_when_no_watchdog_is_configured(notify_socket: tuple[str, socket.socket]) -> None:
    """Without WATCHDOG_USEC the task ends at once and sends nothing."""
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket[0]})
    await asyncio.wait_for(run_watchdog(n, lambda: True), 5)
    assert received(notify_socket[1]) == []


# -- end to end: the real worker process under a fake service manager -------------


def next_message(sock: socket.socket, w: WorkerProcess) -> str:
    """The next datagram, failing with the worker's log if none comes within a generous deadline."""
    sock.settimeout(30)
    try:
        return sock.recv(4096).decode()
    except TimeoutError:
        pytest.fail(f"no notify message (worker exit code {w.poll()}); worker log:\n{w.log_text()[-3000:]}")


def test_real_worker_sends_ready_only_once_connected_then_watchdog_then_stopping(
    notify_socket: tuple[str, socket.socket],
) -> None:
    """The worker says READY=1 only after gearmand is reachable, pings WATCHDOG=1, and says STOPPING=1 on SIGTERM."""
    path, sock = notify_socket
    g = Gearmand()  # its port is chosen, gearmand not started yet
    w = start_worker([g.address], "--processes", "1", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    try:
        # Nothing may claim readiness while no job server is reachable.
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            message = sock.recv(4096).decode()
            pytest.fail(f"sent {message!r} before any job server was up")
        assert w.poll() is None
        g.start()
        ready = next_message(sock, w)
        assert ready.split("\n")[0] == "READY=1"
        assert re.fullmatch(r"READY=1\nSTATUS=serving \d+ functions", ready)
        assert next_message(sock, w) == "WATCHDOG=1"
        w.signal(signal.SIGTERM)
        messages: list[str] = []
        while not (messages and messages[-1].startswith("STOPPING=1")):
            messages.append(next_message(sock, w))
        assert set(messages[:-1]) <= {"WATCHDOG=1"}
        assert w.wait(30) == 0
        # The watchdog task may still ping while the pool shuts down; nothing may claim readiness again.
        assert set(received(sock)) <= {"WATCHDOG=1"}
    finally:
        w.kill()
        g.stop()
