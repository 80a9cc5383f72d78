"""The worker's memory is bounded by the configured ``max_packet_size``, not by what a server announces.

Uses the fake server of tests/fakepeer.py (a real gearmand never sends
oversize or endless packets).  The worker gets ``GEARWORKER_MAX_PACKET_SIZE``
= 1 MiB and a real gearmand beside the fake, which it must keep serving.
"""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import psutil
import pytest
from fakepeer import PacketSocket, fake_server, run_gearman_cli
from gearmand import Gearmand
from support import WorkerProcess

from gearworker.protocol import PacketType

from .harness import mib, record_figures

T = PacketType
LIMIT = 1 << 20
HEADER = struct.Struct(">4sII")
ENV = {"GEARWORKER_MAX_PACKET_SIZE": str(LIMIT), "GEARWORKER_RECONNECT_MIN": "0.05", "GEARWORKER_RECONNECT_MAX": "0.5"}


def _stream(conn: PacketSocket, size: int, send: int, sent: threading.Event) -> None:
    """Announce a JOB_ASSIGN_UNIQ of ``size`` bytes, then send ``send`` bytes of it, 64 KiB at a time."""
    conn.wait_for(T.CAN_DO)
    conn.send(HEADER.pack(b"\0RES", T.JOB_ASSIGN_UNIQ, size))
    conn.sock.settimeout(10)
    chunk = b"\x01" * 65536
    try:
        for _ in range(send // len(chunk)):
            conn.sock.sendall(chunk)
    except OSError:
        return  # cut off by the worker
    sent.set()
    conn.wait_closed(timeout=30)


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


@pytest.mark.parametrize(
    ("announced", "sent", "cut_off"),
    [
        (LIMIT + 1, 64 * LIMIT, True),  # one byte over the configured limit: refused from the header alone
        (0xFFFFFFFF, 64 * LIMIT, True),  # 4 GiB
        (LIMIT, LIMIT - 65536, False),  # within the limit but never finished: buffered, at most the limit
    ],
    ids=["limit+1", "4GiB", "limit-never-finished"],
)
def test_worker_memory_is_bounded_by_the_configured_max_packet_size(
    gearmand: Gearmand, tmp_path: Path, announced: int, sent: int, cut_off: bool
) -> None:
    """A server streaming a packet over the limit is cut off at the header; one streaming a packet within the
    limit that never ends costs at most the limit; the worker keeps serving the real server either way."""
    # One async handler: one connection per server, so connection 2 is the reconnect.
    (tmp_path / "only_echo.py").write_text(
        "from gearworker import handler\n\n@handler('echo')\nasync def echo(job):\n    return job.workload\n"
    )
    sent_all = threading.Event()
    with fake_server(lambda conn: _stream(conn, announced, sent, sent_all)) as fake:
        w = WorkerProcess([fake.address, gearmand.address], handlers=tmp_path, env=ENV)
        w.start(wait_for="echo", gearmand=gearmand)
        try:
            baseline = _rss(w.pid)
            fake.wait_connections(1)
            if cut_off:
                fake.wait_connections(2)  # reset, then reconnected
                downs = [e for e in w.log_records("server.down") if e.get("server") == fake.address]
                assert len(downs) == 1 and f"exceeds the {LIMIT} byte limit" in downs[0]["reason"], downs
            else:
                assert sent_all.wait(15)
                time.sleep(0.5)  # for the worker to read what is in its socket buffer
                assert len(fake.connections) == 1  # a slow packet within the limit is no protocol error
            growth = _rss(w.pid) - baseline
            code, out, _ = run_gearman_cli(gearmand.port, "echo", b"real server")
            assert (code, out) == (0, b"real server")
            record_figures(
                f"packet_limit_{announced}", announced=announced, sent=sent, limit=LIMIT, rss_growth_mib=mib(growth)
            )
            assert growth < LIMIT + 8 * (1 << 20)
        finally:
            assert w.stop(20) == 0
