"""gearworker serves the ``gearman`` CLI (C libgearman), a client nobody here wrote."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gearmand import Gearmand
from support import WorkerProcess


@pytest.fixture(scope="module")
def gearmand() -> Iterator[Gearmand]:
    """One gearmand for the module: every test here submits independent jobs."""
    g = Gearmand().start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def worker(gearmand: Gearmand) -> Iterator[WorkerProcess]:
    w = WorkerProcess([gearmand.address], args=["--processes", "2"])
    w.start(wait_for="slow_cpu", gearmand=gearmand)
    yield w
    assert w.stop() == 0


def gearman(
    g: Gearmand, *args: str, data: bytes | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["gearman", "-p", str(g.port), *args], input=data, capture_output=True, timeout=timeout, check=False
    )


def test_binary_workload_with_every_byte_value_round_trips(gearmand: Gearmand, worker: WorkerProcess) -> None:
    payload = bytes(range(256)) * 64  # NUL and every other byte, in every position
    out = gearman(gearmand, "-f", "echo", data=payload)
    assert out.returncode == 0, out.stderr
    assert out.stdout == payload
    out = gearman(gearmand, "-f", "reverse", data=payload)
    assert out.stdout == payload[::-1]


PHP_ECHO = """<?php
$c = new GearmanClient();
$c->addServer("127.0.0.1", (int)$argv[1]);
$data = stream_get_contents(STDIN);
$r = $c->doNormal("echo", $data);
if ($c->returnCode() != GEARMAN_SUCCESS) { fwrite(STDERR, $c->error()); exit(1); }
echo $r;
"""


def test_ten_megabyte_workload_round_trips(gearmand: Gearmand, worker: WorkerProcess, tmp_path: Path) -> None:
    """Through PHP's GearmanClient (C libgearman): the ``gearman`` CLI reads a 10 MB stdin in minutes."""
    script = tmp_path / "echo.php"
    script.write_text(PHP_ECHO)
    payload = os.urandom(10 * 1024 * 1024)
    out = subprocess.run(
        ["php", str(script), str(gearmand.port)], input=payload, capture_output=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) == len(payload)
    assert out.stdout == payload


def test_large_workload_round_trips_through_the_gearman_cli(
    gearmand: Gearmand, worker: WorkerProcess, request: pytest.FixtureRequest
) -> None:
    """1 MB; 10 MB with ``--full`` (the CLI itself needs about 200 s to read 10 MB from stdin here)."""
    size = 10 if request.config.getoption("--full") else 1
    payload = os.urandom(size * 1024 * 1024)
    out = gearman(gearmand, "-f", "echo", data=payload, timeout=60 * size)
    assert out.returncode == 0, out.stderr
    assert out.stdout == payload


def test_two_hundred_concurrent_foreground_jobs_each_get_their_own_result(
    gearmand: Gearmand, worker: WorkerProcess
) -> None:
    procs = []
    for i in range(200):
        payload = f"job-{i}-".encode() + os.urandom(16).hex().encode()
        p = subprocess.Popen(
            ["gearman", "-p", str(gearmand.port), "-f", "reverse", "--", payload.decode()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append((payload, p))
    for payload, p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out == payload[::-1]


@pytest.mark.parametrize("flag", ["-I", "", "-L"], ids=["high", "normal", "low"])
def test_each_priority_runs(gearmand: Gearmand, worker: WorkerProcess, flag: str) -> None:
    out = gearman(gearmand, *[f for f in (flag,) if f], "-f", "reverse", "--", "abc")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"cba"


@pytest.mark.parametrize("flag", ["-I", "", "-L"], ids=["high", "normal", "low"])
def test_background_jobs_at_each_priority_are_done(gearmand: Gearmand, worker: WorkerProcess, flag: str) -> None:
    for i in range(5):
        out = gearman(gearmand, "-b", *[f for f in (flag,) if f], "-u", f"bg-{flag}-{i}", "-f", "echo", "--", "x")
        assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        queued, running, _ = gearmand.status().get("echo", (0, 0, 0))
        if queued == 0 and running == 0:
            break
        time.sleep(0.05)
    assert gearmand.status()["echo"][:2] == (0, 0)
    # Log lines are written in batches (within logs.LINGER of the job's end): the lines may lag gearmand.
    while sum(r.get("function") == "echo" for r in worker.log_records()) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(r.get("function") == "echo" for r in worker.log_records()) >= 5


def test_failed_job_is_a_failure_to_the_gearman_cli_and_carries_the_message(
    gearmand: Gearmand, worker: WorkerProcess
) -> None:
    """WORK_WARNING(message) + WORK_FAIL: the CLI exits non-zero instead of hanging (as with WORK_EXCEPTION)."""
    out = gearman(gearmand, "-f", "fail", "--", "x", timeout=15)
    assert out.returncode != 0
    assert b"fail was asked to fail" in out.stdout + out.stderr


def test_cpu_handler_progress_reaches_the_client(gearmand: Gearmand, worker: WorkerProcess) -> None:
    out = gearman(gearmand, "-f", "slow_cpu", "--", "2", timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"slept 2s in a pool process")
    assert b"50% Complete" in out.stdout and b"100% Complete" in out.stdout


def test_alias_is_served_by_its_handler(gearmand: Gearmand, worker: WorkerProcess) -> None:
    out = gearman(gearmand, "-f", "echo_alias", "--", "via alias")
    assert out.stdout == b"via alias"


def test_each_job_is_logged_once_with_its_fields(gearmand: Gearmand, worker: WorkerProcess) -> None:
    gearman(gearmand, "-u", "the-unique", "-f", "echo", "--", "x")
    deadline = time.monotonic() + 20  # the line follows the result within a batch (tens of ms)
    while not any("the-unique" in r.values() for r in worker.log_records()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # and a second line, if there were one, would have had its batch too
    records = [r for r in worker.log_records() if "the-unique" in r.values()]
    assert len(records) == 1
    (record,) = records
    assert (record["event"], record["function"], record["outcome"]) == ("job.done", "echo", "complete")
    assert str(record["handle"]).startswith("H:") and isinstance(record["duration"], float)
