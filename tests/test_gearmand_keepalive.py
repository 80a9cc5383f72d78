"""gearmand must notice a worker that vanished: the local gearmand has a short keepalive, and the worker says
so at start-up when its gearmand's keepalive is missing or slow.

The scenario itself (a worker cut off in a network namespace while it runs a job) is in
tests/network/test_silent_loss.py.
"""

from __future__ import annotations

import json
import time

from gearmand import Gearmand, free_port
from workerproc import WorkerProcess

from gearworker.app.keepalive import KEEPALIVE_ADVICE, gearmand_keepalive, timer_of
from gearworker.app.localserver import KEEPALIVE_FLAGS, LocalGearmand

SHORT = ["--keepalive", "--keepalive-idle=5", "--keepalive-interval=2", "--keepalive-count=3"]


async def test_the_local_gearmand_drops_a_silent_worker_after_5_s_idle_and_3_probes_2_s_apart() -> None:
    """`gearworker run` without a server starts gearmand with --keepalive 5/2/3: its end of a connection shows
    a keepalive timer of at most 5 s."""
    local = LocalGearmand(free_port())
    await local.start()
    try:
        seen = await gearmand_keepalive(local.address, 5)
    finally:
        await local.stop()
    assert tuple(SHORT) == KEEPALIVE_FLAGS
    assert seen is not None and seen.idle is not None and seen.idle <= 5.0


async def test_the_probe_reads_gearmands_keepalive_idle_from_its_end_of_the_connection(
    gearmand_factory: type[Gearmand],
) -> None:
    """Debian's gearmand 1.1.20 keeps every connection alive with the kernel's timing unless told otherwise:
    7,200 s idle before the first probe; with --keepalive-idle=5, 5 s."""
    plain = await gearmand_keepalive(gearmand_factory().address, 5)
    short = await gearmand_keepalive(gearmand_factory(extra=SHORT).address, 5)
    assert plain is not None and plain.idle is not None and plain.idle > 3600
    assert short is not None and short.idle is not None and short.idle <= 5.0


def test_a_socket_that_is_not_on_this_host_is_not_judged() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1092 0100007F:D431 01 00000000:00000000 02:000001F4 00000000     0        0 1 1\n"
        "   1: 0100007F:1093 0100007F:D432 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n"
    )
    assert timer_of(table, "0100007F:1092", "0100007F:D431") == (2, 5.0)
    assert timer_of(table, "0100007F:1093", "0100007F:D432") == (0, 0.0)
    assert timer_of(table, "0100007F:1094", "0100007F:D432") is None


def _warnings(w: WorkerProcess) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for line in w.log_text().splitlines()
        if line.startswith("{") and '"gearmand.blind_to_dead_workers"' in line
    ]


def test_the_worker_warns_once_at_start_up_about_a_gearmand_with_the_kernels_keepalive_timing(
    gearmand_factory: type[Gearmand],
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
    assert warning["server"] == slow.address and "7200 s" in str(warning["detail"])
    assert warning["fix"] == KEEPALIVE_ADVICE
