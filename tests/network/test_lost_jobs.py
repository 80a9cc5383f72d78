"""Jobs of a lost connection (worker) and background submits whose server died before answering (client)."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import psutil
import pytest
from gearmand import Gearmand, free_port
from netlab import HERE
from support import MakeGearmand, WorkerProcess, wait_until

from gearworker import Client
from gearworker.client.health import server_health
from gearworker.errors import ConnectionLost


def _worker(gearmand: Gearmand, tmp_path: Path, mode: str, metrics_port: int) -> WorkerProcess:
    env = {
        "NET_RECORD": str(tmp_path / "runs.txt"),
        "NET_PIDS": str(tmp_path / "pids.txt"),
        "GEARWORKER_ON_CONNECTION_LOST": mode,
        "GEARWORKER_PROCESSES": "1",
        "GEARWORKER_GRACE_PERIOD": "30",
    }
    return WorkerProcess(
        [gearmand.address], handlers=HERE / "handlers", env=env, args=["--metrics", f"127.0.0.1:{metrics_port}"]
    )


def _abandoned(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gearworker_jobs_total{") and 'outcome="abandoned"' in line
    )


async def test_jobs_of_a_killed_server_are_cancelled_and_shutdown_does_not_wait(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """on_connection_lost = "cancel" (the default): when gearmand dies under a running async job and a running
    CPU job, the async handler is cancelled and the CPU job's pool process killed, each logged as job.abandoned and
    counted with outcome "abandoned"; neither ever records a result, and SIGTERM then exits without waiting the
    30 s grace period."""
    port = free_port()
    worker = _worker(gearmand, tmp_path, "cancel", port).start(wait_for="net_cpu_sleep", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            await client.submit_background("net_slow", b"3600", unique="async-job")
            await client.submit_background("net_cpu_sleep", b"3600", unique="cpu-job")
        pids = tmp_path / "pids.txt"
        wait_until(
            lambda: pids.exists() and pids.read_text().strip(), timeout=20, interval=0.1, what="the CPU job started"
        )
        child = psutil.Process(int(pids.read_text().split()[0]))
        wait_until(
            lambda: gearmand.status().get("net_slow", (0, 0, 0))[1] == 1,
            timeout=10,
            interval=0.1,
            what="async job runs",
        )
        gearmand.kill()
        wait_until(
            lambda: len(worker.log_records("job.abandoned")) == 2,
            timeout=10,
            interval=0.1,
            what="two job.abandoned events",
            detail=lambda: worker.log_text()[-3000:],
        )
        assert not [p for p in psutil.wait_procs([child], timeout=10)[1] if p.status() != psutil.STATUS_ZOMBIE], (
            "the CPU job's pool process was killed"
        )
        wait_until(lambda: _abandoned(port) == 2, timeout=10, interval=0.1, what="2 jobs counted as abandoned")
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0  # far less than the 30 s grace period: nothing left to wait for
        assert not (tmp_path / "runs.txt").exists(), "no abandoned job ran to its end"
    finally:
        worker.stop(timeout=5)


async def test_finish_lets_orphans_run_but_shutdown_does_not_wait_for_them(gearmand: Gearmand, tmp_path: Path) -> None:
    """on_connection_lost = "finish": a job whose server died runs to its end (its result goes nowhere); it is
    logged as job.abandoned, and SIGTERM does not wait the grace period for it."""
    port = free_port()
    worker = _worker(gearmand, tmp_path, "finish", port).start(wait_for="net_slow", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            await client.submit_background("net_slow", b"2", unique="short-orphan")
            await client.submit_background("net_slow", b"3600", unique="long-orphan")
        wait_until(
            lambda: gearmand.status().get("net_slow", (0, 0, 0))[1] == 2, timeout=10, interval=0.1, what="both run"
        )
        gearmand.kill()
        wait_until(
            lambda: len(worker.log_records("job.abandoned")) == 2,
            timeout=10,
            interval=0.1,
            what="two job.abandoned events",
        )
        record = tmp_path / "runs.txt"
        wait_until(
            lambda: record.exists() and "short-orphan" in record.read_text(),
            timeout=10,
            interval=0.1,
            what="the orphan finished",
        )
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0  # the 3600 s orphan is not waited for (grace period: 30 s)
        assert "long-orphan" not in record.read_text()
    finally:
        worker.stop(timeout=5)


def _unique_on(client: Client, address: str) -> str:
    return next(u for u in (f"job-{i}" for i in range(1000)) if client.server_for(u) == address)


async def test_background_submit_with_unique_goes_to_the_next_server_when_its_server_is_declared_dead(
    gearmand_factory: MakeGearmand,
) -> None:
    """A background job with a unique id whose server accepted the connection but never answered (frozen with
    SIGSTOP, declared dead by the heartbeat before JOB_CREATED) is submitted again to the next server.  The
    frozen server is then known down to the process: jobs without a unique id go to the other one.  Had the
    process not known it (a server that goes silent under such a submit), the submit fails with ConnectionLost
    saying why it was not retried."""
    frozen, healthy = gearmand_factory(), gearmand_factory()
    async with Client([frozen.address, healthy.address], heartbeat_interval=0.5, heartbeat_timeout=0.5) as client:
        uid = _unique_on(client, frozen.address)
        await client.status_unique(uid, server=frozen.address)  # connected before the freeze
        assert frozen.proc is not None
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            handle = await client.submit_background("net_echo", b"moved", unique=uid)
            assert handle.server == healthy.address
            assert healthy.status()["net_echo"][0] == 1

            assert server_health().is_down(frozen.address)
            for _ in range(4):  # round robin would have tried the frozen server by now: it is skipped
                assert (await client.submit_background("net_echo", b"elsewhere")).server == healthy.address

            server_health().up(frozen.address)  # as if the process had not noticed yet
            with pytest.raises(ConnectionLost, match="no unique id"):
                # Round robin without a unique id: the frozen server comes up within two submits.
                for _ in range(2):
                    await client.submit_background("net_echo", b"not retried")
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
            server_health().close()
