"""``gearworker submit`` and ``gearworker status`` run as commands against a real gearmand."""

from __future__ import annotations

import subprocess
import sys

from gearmand import Gearmand
from support import MakeGearmand, Workers, every_byte, free_port_address, workers_fixture  # noqa: F401


def gearworker(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "gearworker", *args], input=input, capture_output=True, timeout=60)


def test_submit_writes_the_result_bytes_to_stdout_from_an_argument_or_stdin(
    gearmand: Gearmand, workers: Workers
) -> None:
    """The result goes to stdout unchanged (every byte value); '-' reads a binary payload from stdin."""
    workers.php([gearmand])
    out = gearworker("submit", "php.echo", "hello", "--server", gearmand.address)
    assert (out.returncode, out.stdout) == (0, b"hello")
    data = every_byte(70_000)
    out = gearworker("submit", "php.echo", "-", "--server", gearmand.address, input=data)
    assert out.returncode == 0 and out.stdout == data


def test_submit_shows_progress_on_stderr_only(gearmand: Gearmand, workers: Workers) -> None:
    """WORK_STATUS/DATA/WARNING are printed on stderr; stdout holds only the result."""
    workers.php([gearmand])
    out = gearworker("submit", "php.progress", "x", "--server", gearmand.address)
    assert out.returncode == 0 and out.stdout == b"done:x"
    assert out.stderr.decode().splitlines() == [
        "progress 1/3 (33%)",
        "data: data-1",
        "warning: warning-1",
        "progress 3/3 (100%)",
    ]
    quiet = gearworker("submit", "php.progress", "x", "-q", "--server", gearmand.address)
    assert quiet.stderr == b"" and quiet.stdout == b"done:x"


def test_submit_exit_codes_for_failed_jobs_timeouts_and_unreachable_servers(
    gearmand: Gearmand, workers: Workers
) -> None:
    """A failed or timed-out job exits 1 with the worker's message; no reachable server exits 2."""
    workers.php([gearmand])
    failed = gearworker("submit", "php.warnfail", "7", "-q", "--server", gearmand.address)
    assert failed.returncode == 1 and failed.stdout == b""
    assert "job failed: ValueError: bad input 7" in failed.stderr.decode()
    exc = gearworker("submit", "php.exception", "e", "--server", gearmand.address)
    assert exc.returncode == 1 and "boom: e" in exc.stderr.decode()
    slow = gearworker("submit", "php.sleep", "5", "-q", "--timeout", "0.2", "--server", gearmand.address)
    assert slow.returncode == 1 and "did not finish within 0.2s" in slow.stderr.decode()
    dead = free_port_address()
    down = gearworker("submit", "php.echo", "x", "--server", dead)
    assert down.returncode == 2 and dead in down.stderr.decode()
    usage = gearworker("submit", "php.echo", "x", "--when", "+5", "--server", gearmand.address)
    assert usage.returncode == 2 and "--background" in usage.stderr.decode()


def test_background_submit_prints_the_handle_and_status_shows_the_queue(gearmand: Gearmand) -> None:
    """-b prints the handle; ``status`` tabulates functions; ``status --handle/--unique`` finds the job."""
    out = gearworker("submit", "nobody.home", "x", "-b", "-p", "low", "-u", "u-1", "--server", gearmand.address)
    assert out.returncode == 0
    handle = out.stdout.decode().strip()
    assert handle.startswith("H:")
    table = gearworker("status", "--server", gearmand.address)
    assert table.returncode == 0
    lines = table.stdout.decode().splitlines()
    assert lines[0].split() == ["FUNCTION", "WAITING", "RUNNING", "WORKERS"]
    assert ["nobody.home", "1", "0", "0"] in [line.split() for line in lines[1:]]
    job = gearworker("status", "--handle", handle, "--server", gearmand.address)
    assert job.stdout.decode().splitlines()[1].split() == ["yes", "no", "0", "0"]
    by_unique = gearworker("status", "--unique", "u-1", "--server", gearmand.address)
    assert by_unique.stdout.decode().splitlines()[1].split() == ["yes", "no", "0", "0", "0"]


def test_status_with_several_servers_and_workers(gearmand_factory: MakeGearmand, workers: Workers) -> None:
    """With several servers the table gains a SERVER column; --workers lists worker connections only;
    an unreachable server is reported on stderr and makes the exit code 2."""
    a, b = gearmand_factory(), gearmand_factory()
    workers.php([a, b], 2)
    servers = ["--server", a.address, "--server", b.address]
    table = gearworker("status", *servers)
    rows = [line.split() for line in table.stdout.decode().splitlines()]
    assert rows[0] == ["SERVER", "FUNCTION", "WAITING", "RUNNING", "WORKERS"]
    assert [a.address, "php.echo", "0", "0", "2"] in rows and [b.address, "php.echo", "0", "0", "2"] in rows
    listed = gearworker("status", "--workers", *servers)
    rows = [line.split() for line in listed.stdout.decode().splitlines()]
    assert rows[0] == ["SERVER", "FD", "ADDRESS", "CLIENT-ID", "FUNCTIONS"]
    assert len(rows) == 5 and all("php.echo" in row for row in rows[1:])
    dead = free_port_address()
    partial = gearworker("status", *servers, "--server", dead)
    assert partial.returncode == 2 and dead in partial.stderr.decode()
    assert b"php.echo" in partial.stdout


def test_submit_when_schedules_a_background_job(gearmand: Gearmand) -> None:
    """--when +SECONDS queues a SUBMIT_JOB_EPOCH job: the handle is printed and gearmand holds the job."""
    out = gearworker("submit", "later.fn", "x", "-b", "--when", "+3600", "--server", gearmand.address)
    assert out.returncode == 0 and out.stdout.startswith(b"H:")
    assert gearmand.status()["later.fn"] == (1, 0, 0)
    bad = gearworker("submit", "later.fn", "x", "-b", "--when", "tomorrow", "--server", gearmand.address)
    assert bad.returncode == 2 and b"ISO" in bad.stderr


def test_status_shows_waiting_jobs_apart_from_running_ones() -> None:
    """gearmand's status line counts running jobs in its total: the table's WAITING leaves them out."""
    from gearworker.client.cli import _status_table

    assert _status_table({"gm:4730": ["resize\t3\t1\t2"]}, False)[1] == ["resize", "2", "1", "2"]
