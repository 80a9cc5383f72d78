"""Scheduled (SUBMIT_JOB_EPOCH) jobs on an idle system: gearmand #101."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

from gearmand import Gearmand
from netlab import HERE, wait_until
from workerproc import WorkerProcess

from gearworker import Client


async def test_epoch_job_runs_on_an_idle_system(gearmand: Gearmand, tmp_path: Path) -> None:
    """One worker asleep, no other traffic: a job scheduled at now + 3 s is done by now + 5 s.  gearmand 1.1.20
    only hands out a due epoch job when something wakes a worker; the worker's idle_poll (default 1 s) is that."""
    record = tmp_path / "runs.txt"
    worker = WorkerProcess([gearmand.address], handlers=HERE / "handlers", env={"NET_RECORD": str(record)})
    try:
        worker.start(wait_for="net_echo", gearmand=gearmand)
        time.sleep(0.5)  # it has found no work and sleeps
        submitted = time.monotonic()
        async with Client([gearmand.address]) as client:
            await client.submit_background("net_echo", b"scheduled", unique="epoch-job",
                                           when=datetime.now() + timedelta(seconds=3))
        # The bound is +5 s from the submit; wait_until polls (time.sleep): nothing else runs meanwhile.
        wait_until(lambda: record.exists() and "epoch-job" in record.read_text(),
                   timeout=5 - (time.monotonic() - submitted), interval=0.05, what="epoch job done by +5 s")
    finally:
        worker.stop(timeout=5)
