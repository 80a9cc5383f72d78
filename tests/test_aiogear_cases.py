"""The cases that break aiogear 0.2.6 (PyPI's aiogear, which gearworker replaces), each passing here.

- binary workloads: aiogear decodes workloads as UTF-8 and dies;
- concurrent results: aiogear hands WORK_COMPLETE to the oldest waiting
  future, so with several workers most jobs got another job's result;
- shutdown with a job in flight: aiogear's ``shutdown()`` raises TypeError;
- reconnect after a gearmand restart: aiogear never reconnects.

The worker runs as a real process against a real gearmand; clients are the
``gearman`` CLI (libgearman) and a raw protocol client that sees every handle.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakepeer import RawClient, gearman_cli, run_gearman_cli
from gearmand import Gearmand
from support import TEST_HANDLERS, WorkerProcess, wait_until

from gearworker.protocol import PacketType

pytestmark = pytest.mark.timeout(120)

BINARY = {
    "every_byte": bytes(range(256)) * 4,
    "invalid_utf8": b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc" * 10,
    "nul_bytes": b"\x00head\x00\x00middle\x00tail\x00",
    "random_1mib": random.Random(1).randbytes(1 << 20),
}


@pytest.fixture
def workers(gearmand: Gearmand) -> Iterator[list[WorkerProcess]]:
    """Worker processes started by the test (append started ones); all are stopped at the end."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


def start(workers: list[WorkerProcess], gearmand: Gearmand, *args: str, count: int = 1) -> WorkerProcess:
    w = WorkerProcess([gearmand.address], handlers=TEST_HANDLERS, args=["--processes", "2", *args])
    workers.append(w)
    w.start(wait_for="cpu_echo", gearmand=gearmand)
    w.wait_registered(gearmand, "cpu_echo", workers=count)
    return w


@pytest.mark.parametrize("function", ["echo", "cpu_echo"])
def test_binary_workloads_come_back_byte_for_byte(
    workers: list[WorkerProcess], gearmand: Gearmand, function: str
) -> None:
    """Workloads that are not UTF-8 (every byte value, NULs, 1 MiB random) round-trip unchanged."""
    start(workers, gearmand)
    client = RawClient(gearmand.port)
    handles = client.submit_many([(function, payload) for payload in BINARY.values()])
    results = client.results(handles)
    for handle, (name, payload) in zip(handles, BINARY.items(), strict=True):
        assert results[handle] == (PacketType.WORK_COMPLETE, payload), name
    # And through libgearman's CLI, a client nobody here wrote.
    for name, payload in BINARY.items():
        code, out, err = run_gearman_cli(gearmand.port, function, payload)
        assert (code, out) == (0, payload), (name, err)
    assert workers[0].proc is not None and workers[0].proc.poll() is None


def test_concurrent_results_each_reach_their_own_job(workers: list[WorkerProcess], gearmand: Gearmand) -> None:
    """60 jobs on two workers, finishing in the reverse of their submission order: each result is its own request's."""
    start(workers, gearmand)
    start(workers, gearmand, count=2)
    rng = random.Random(7)
    jobs = []
    for i in range(60):
        function = "cpu_sleep_echo" if i % 10 == 0 else "sleep_echo"
        delay = 0.01 * (60 - i) if function == "sleep_echo" else 0.05
        jobs.append((function, f"{delay:.2f}|{i}|".encode() + rng.randbytes(32)))
    client = RawClient(gearmand.port)
    handles = client.submit_many(jobs)
    assert len(set(handles)) == len(handles)
    results = client.results(handles)
    for handle, (_, payload) in zip(handles, jobs, strict=True):
        assert results[handle] == (PacketType.WORK_COMPLETE, payload)
    # The order they ended in really was mixed up (otherwise this tests nothing).
    ends = [p.args[0] for p in client.conn.received if p.type is PacketType.WORK_COMPLETE]
    assert ends != handles
    # Both workers took jobs (their job.done lines are written within logs.LINGER of each job's end).
    wait_until(lambda: all(w.log_text().count('"job.done"') > 0 for w in workers), what="both workers' job.done lines")


def test_concurrent_cli_clients_each_get_their_own_result(workers: list[WorkerProcess], gearmand: Gearmand) -> None:
    """Twelve `gearman` CLI clients at once, on two workers, finishing out of order: each prints its own workload."""
    start(workers, gearmand)
    start(workers, gearmand, count=2)
    payloads = [f"{0.05 * (12 - i):.2f}|client {i}|".encode() + bytes([i, 0, 255 - i]) for i in range(12)]
    procs = [gearman_cli(gearmand.port, "sleep_echo", p) for p in payloads]
    for proc, payload in zip(procs, payloads, strict=True):
        out, err = proc.communicate(timeout=60)
        assert out == payload, err


def test_sigterm_with_an_async_job_in_flight_completes_it_and_exits_0(
    workers: list[WorkerProcess], gearmand: Gearmand, tmp_path: Path
) -> None:
    """SIGTERM while an async job runs: the job completes, the worker exits 0."""
    w = start(workers, gearmand, "--grace-period", "30")
    pidfile = tmp_path / "pid"
    client = gearman_cli(gearmand.port, "async_long", json.dumps({"seconds": 1.5, "pidfile": str(pidfile)}).encode())
    wait_until(pidfile.exists, what="the job to start")
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    out, err = client.communicate(timeout=10)
    assert out == f"first {w.pid}".encode(), err


def test_sigterm_with_an_async_job_past_the_grace_requeues_it(
    workers: list[WorkerProcess], gearmand: Gearmand, tmp_path: Path
) -> None:
    """SIGTERM while a long async job runs and the grace runs out: exit 0, and another worker does the job."""
    w = start(workers, gearmand, "--grace-period", "0.5")
    pidfile, once = tmp_path / "pid", tmp_path / "once"
    workload = json.dumps({"seconds": 60, "pidfile": str(pidfile), "once": str(once)}).encode()
    client = gearman_cli(gearmand.port, "async_long", workload)
    wait_until(pidfile.exists, what="the job to start")
    started = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    assert time.monotonic() - started < 20  # did not wait for the 60 s job
    second = start(workers, gearmand)
    out, err = client.communicate(timeout=30)
    assert out == f"rerun {second.pid}".encode(), err


@pytest.mark.parametrize("how", ["restart", "kill_and_stay_down"])
def test_worker_serves_again_after_gearmand_restarts(
    workers: list[WorkerProcess], gearmand: Gearmand, how: str
) -> None:
    """gearmand restarted on the same port (or SIGKILLed and back after a while): the worker reconnects and serves."""
    w = start(workers, gearmand)
    assert run_gearman_cli(gearmand.port, "echo", b"before")[1] == b"before"
    if how == "restart":
        gearmand.restart()
    else:
        gearmand.kill()
        time.sleep(1.5)  # several reconnect attempts fail meanwhile
        gearmand.start()
    w.wait_registered(gearmand, "echo")
    w.wait_registered(gearmand, "cpu_echo")
    assert run_gearman_cli(gearmand.port, "echo", b"after")[1] == b"after"
    assert run_gearman_cli(gearmand.port, "cpu_echo", b"\xffafter")[1] == b"\xffafter"
    log = w.log_text()
    assert '"server.down"' in log and '"server.up"' in log
    assert w.proc is not None and w.proc.poll() is None
