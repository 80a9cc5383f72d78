"""gearworker against Perl's Gearman::Client and Gearman::Worker (libgearman-client-perl).

That package speaks the protocol in Perl, without libgearman: a second implementation nobody
here wrote, beside PHP's and the ``gearman`` CLI (both C libgearman). Its client croaks on a
packet it does not expect, so these tests also pin that gearworker sends it none.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import pytest
from gearmand import Gearmand
from support import PERL_DIR, WorkerProcess, Workers, every_byte, wait_until, workers_fixture  # noqa: F401

from gearworker import Client
from gearworker.client import Progress
from gearworker.errors import JobFailed


@pytest.fixture(scope="module")
def server() -> Iterator[Gearmand]:
    """One gearmand for the module: every test submits independent jobs."""
    g = Gearmand().start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def worker(server: Gearmand) -> Iterator[WorkerProcess]:
    """gearworker with the example handlers (echo, reverse, fail, slow)."""
    w = WorkerProcess([server.address])
    w.start(wait_for="slow", gearmand=server)
    yield w
    assert w.stop() == 0


def perl_client(
    server: Gearmand, *args: str, data: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run tests/perl/client.pl against ``server`` (its modes are in the script's header)."""
    return subprocess.run(
        ["perl", str(PERL_DIR / "client.pl"), server.address, *args],
        input=data,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


# -- Perl's client, gearworker's worker ---------------------------------------------------------------


def test_perl_client_round_trips_every_byte_value_through_gearworker(server: Gearmand, worker: WorkerProcess) -> None:
    payload = every_byte(64 * 1024)
    out = perl_client(server, "do", "echo", data=payload)
    assert out.returncode == 0, out.stderr
    assert out.stdout == payload
    out = perl_client(server, "do", "reverse", data=payload)
    assert out.returncode == 0, out.stderr
    assert out.stdout == payload[::-1]


def test_perl_client_gets_gearworkers_progress_then_the_result(server: Gearmand, worker: WorkerProcess) -> None:
    out = perl_client(server, "do", "slow", data=b"2")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"slept 2s"
    assert out.stderr.decode().splitlines() == ["status 1/2", "status 2/2"]


def test_perl_client_gets_a_failed_job_as_a_failure_with_gearworkers_message(
    server: Gearmand, worker: WorkerProcess
) -> None:
    """WORK_WARNING(message) + WORK_FAIL: Gearman::Client calls on_warning then on_fail, and does not
    croak (a WORK_EXCEPTION it did not ask for would reach it as a WORK_FAIL it cannot parse)."""
    out = perl_client(server, "do", "fail", data=b"x", timeout=30)
    assert out.returncode == 3, out.stderr
    assert out.stderr.decode().splitlines() == [
        "warning RuntimeError: fail was asked to fail (1 bytes)",
        "failed",
    ]


def test_perl_task_set_of_100_concurrent_jobs_each_gets_its_own_result(server: Gearmand, worker: WorkerProcess) -> None:
    out = perl_client(server, "many", "reverse", "100")
    assert out.returncode == 0, out.stderr
    results = dict(line.split("\t", 1) for line in out.stdout.decode().splitlines())
    assert results == {str(i): f"job-{i}-{'x' * i}"[::-1] for i in range(1, 101)}


@pytest.mark.parametrize("priority", ["high", "normal", "low"])
def test_perl_background_jobs_with_unique_ids_run_on_gearworker_at_each_priority(
    server: Gearmand, worker: WorkerProcess, priority: str
) -> None:
    uniques = [f"perl-{priority}-{i}" for i in range(5)]
    for unique in uniques:
        out = perl_client(server, "bg", "echo", unique, priority)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"{server.address}//H:".encode())  # Gearman::Client's "server//handle"

    def all_logged() -> bool:  # job.done lines are written a batch at a time, just after gearmand hears
        done = {r.get("unique") for r in worker.log_records() if r.get("event") == "job.done"}
        return done.issuperset(uniques)

    wait_until(all_logged, 20, what=f"5 {priority} background jobs from Perl to be done")
    assert server.status()["echo"][:2] == (0, 0)


# -- gearworker's client, Perl's worker ---------------------------------------------------------------


async def test_client_round_trips_every_byte_value_through_a_perl_worker(server: Gearmand, workers: Workers) -> None:
    workers.perl([server])
    async with Client([server.address]) as client:
        data = every_byte(64 * 1024)
        assert await client.submit("perl.echo", data) == data
        assert await client.submit("perl.reverse", data) == data[::-1]
        assert await client.submit("perl.echo", b"\x00") == b"\x00"


async def test_progress_from_a_perl_worker_reaches_on_progress_before_the_result(
    server: Gearmand, workers: Workers
) -> None:
    workers.perl([server])
    seen: list[Progress] = []
    async with Client([server.address]) as client:
        assert await client.submit("perl.progress", "a", on_progress=seen.append) == b"done:a"
    assert [(e.kind, e.numerator, e.denominator) for e in seen] == [("status", 1, 2), ("status", 2, 2)]


async def test_a_perl_worker_that_fails_or_dies_fails_the_job_once_and_the_connection_stays_usable(
    server: Gearmand, workers: Workers
) -> None:
    """A handler returning undef sends WORK_FAIL; one that dies sends WORK_EXCEPTION (its message frozen
    by Storable), then WORK_FAIL for the same handle. The caller gets one error for each job, and the
    connection goes on serving other jobs. (gearmand ended the job on the WORK_EXCEPTION, so it answers
    that WORK_FAIL with ERROR JOB_NOT_FOUND, and Gearman::Worker dies of it: a fresh one serves the rest.)"""
    workers.perl([server])
    async with Client([server.address]) as client:
        with pytest.raises(JobFailed) as failed:
            await client.submit("perl.undef", "x", timeout=30)
        assert failed.value.function == "perl.undef"
        with pytest.raises(JobFailed) as died:
            await client.submit("perl.die", "y", timeout=30)
        assert "perl died: y" in died.value.message
        workers.perl([server])
        results = await asyncio.gather(*(client.submit("perl.echo", f"after-{i}", timeout=30) for i in range(20)))
        assert results == [f"after-{i}".encode() for i in range(20)]
