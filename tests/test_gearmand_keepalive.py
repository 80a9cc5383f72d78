"""gearmand must notice a worker that vanished: the local gearmand has a short keepalive, and the worker says
so at start-up when its gearmand's keepalive is missing or slow.

The scenario itself (a worker cut off in a network namespace while it runs a job) is in
tests/network/test_silent_loss.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from gearmand import free_port
from support import MakeGearmand, WorkerProcess

from gearworker.app.keepalive import KEEPALIVE_ADVICE, Socket, gearmand_keepalive, parse_table, proc_forms, server_ends
from gearworker.app.localserver import KEEPALIVE_FLAGS, LocalGearmand

SHORT = ["--keepalive", "--keepalive-idle=5", "--keepalive-interval=2", "--keepalive-count=3"]


Connect = Callable[[str], socket.socket]


@pytest.fixture
def connect() -> Iterator[Connect]:
    opened: list[socket.socket] = []

    def make(address: str) -> socket.socket:
        host, port = address.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


async def test_the_local_gearmand_drops_a_silent_worker_after_5_s_idle_and_3_probes_2_s_apart(
    connect: Connect,
) -> None:
    """`gearworker run` without a server starts gearmand with --keepalive 5/2/3: its end of our connection shows
    a keepalive timer of at most 5 s."""
    local = LocalGearmand(free_port())
    await local.start()
    try:
        connect(local.address)
        idle = gearmand_keepalive(local.address)
    finally:
        await local.stop()
    assert tuple(SHORT) == KEEPALIVE_FLAGS
    assert idle is not None and idle <= 5.0


def test_the_probe_reads_gearmands_keepalive_idle_from_its_end_of_our_connection(
    gearmand_factory: MakeGearmand, connect: Connect
) -> None:
    """Debian's gearmand 1.1.20 keeps every connection alive with the kernel's timing unless told otherwise:
    7,200 s idle before the first probe; with --keepalive-idle=5, 5 s.  Without a connection of ours, or to a
    server whose end is not on this host, nothing is known."""
    plain, short = gearmand_factory(), gearmand_factory(extra=SHORT)
    with pytest.raises(LookupError):
        gearmand_keepalive(plain.address)
    connect(plain.address)
    connect(short.address)
    slow_idle, short_idle = gearmand_keepalive(plain.address), gearmand_keepalive(short.address)
    assert slow_idle is not None and slow_idle > 3600
    assert short_idle is not None and short_idle <= 5.0


def test_gearmands_ends_are_the_connections_accepted_on_its_address() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1092 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10 1\n"
        "   1: 0100007F:1092 0100007F:D431 01 00000000:00000000 02:000001F4 00000000     0        0 11 1\n"
        "   2: 0100007F:D431 0100007F:1092 01 00000000:00000000 00:00000000 00000000     0        0 22 1\n"
    )
    rows = parse_table(table)
    assert proc_forms("127.0.0.1", 0x1092)[0] == "0100007F:1092"
    assert server_ends(rows, proc_forms("127.0.0.1", 0x1092)) == [
        Socket("0100007F:1092", "0100007F:D431", 2, 5.0, True)  # not the listening socket, not our end
    ]
    assert server_ends(rows, proc_forms("127.0.0.2", 0x1092)) == []


def _warnings(w: WorkerProcess) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for line in w.log_text().splitlines()
        if line.startswith("{") and '"gearmand.blind_to_dead_workers"' in line
    ]


def test_the_worker_warns_once_at_start_up_about_a_gearmand_with_the_kernels_keepalive_timing(
    gearmand_factory: MakeGearmand,
) -> None:
    """Two servers, one started as Debian's package does (7,200 s keepalive), one with --keepalive-idle=5: one
    warning, naming the first server, what it does and the flags to start it with; nothing for the second."""
    slow, short = gearmand_factory(), gearmand_factory(extra=SHORT)
    w = WorkerProcess([slow.address, short.address]).start(wait_for="echo", gearmand=short)
    try:
        deadline = time.monotonic() + 10
        while not _warnings(w) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        assert w.stop() == 0
    (warning,) = _warnings(w)
    detail = str(warning["detail"])  # "TCP keepalive after 7199 s idle": the timer's time left
    assert warning["server"] == slow.address and 3600 < float(detail.split()[3]) <= 7200
    assert warning["fix"] == KEEPALIVE_ADVICE
