"""Scheduled (SUBMIT_JOB_EPOCH) jobs on an idle system: gearmand #101."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from gearmand import Gearmand
from netlab import HERE, figure
from support import WorkerProcess, wait_until

from gearworker import Client


async def test_epoch_job_runs_on_an_idle_system(gearmand: Gearmand, tmp_path: Path) -> None:
    """One worker asleep, no other traffic: a job scheduled at now + 3 s runs, not before its second.

    gearmand 1.1.20 only hands out a due epoch job when something wakes a worker (#101), so
    without the worker's idle_poll (default 1 s) it would never run. How late it ran is printed
    as a figure (about the idle_poll), not asserted: no test here asserts a wall-clock time.
    """
    record = tmp_path / "runs.txt"
    worker = WorkerProcess([gearmand.address], handlers=HERE / "handlers", env={"NET_RECORD": str(record)})
    try:
        worker.start(wait_for="net_echo", gearmand=gearmand)
        time.sleep(0.5)  # it has found no work and sleeps
        epoch = int(time.time()) + 3
        async with Client([gearmand.address]) as client:
            await client.submit_background(
                "net_echo", b"scheduled", unique="epoch-job", when=datetime.fromtimestamp(epoch)
            )
        wait_until(
            lambda: record.exists() and "epoch-job" in record.read_text(),
            timeout=60,
            interval=0.05,
            what="the epoch job to run",
        )
    finally:
        worker.stop(timeout=5)
    (ran_at,) = [
        float(line.split("\t")[1]) for line in record.read_text().splitlines() if line.startswith("epoch-job\t")
    ]
    assert ran_at >= epoch  # never before the second it was scheduled for
    figure("epoch job on an idle system: ran after its second by", f"{ran_at - epoch:.1f} s")
