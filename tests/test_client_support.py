"""Workers nobody here wrote, for the client tests: php-gearman scripts and the ``gearman -w`` CLI.

Imported by the ``test_client*`` modules; holds no tests itself.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from gearmand import Gearmand, free_port
from support import wait_until

PHP_DIR = Path(__file__).parent / "php"
ROOT = Path(__file__).resolve().parent.parent
GEARMAN = shutil.which("gearman") or "/usr/bin/gearman"


def wait_for_workers(servers: Sequence[Gearmand], function: str, count: int, timeout: float = 15.0) -> None:
    """Block until every server lists ``count`` workers able to run ``function``."""
    wait_until(
        lambda: all(g.status().get(function, (0, 0, 0))[2] >= count for g in servers),
        timeout,
        what=f"{count} workers for {function} to register",
        detail=lambda: str([g.status() for g in servers]),
    )


class Workers:
    """Worker processes started by a test, all terminated at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def php(
        self, servers: Sequence[Gearmand], count: int = 1, *, record: Path | None = None, wait: bool = True
    ) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` php-gearman workers (tests/php/worker.php) connected to every server."""
        addresses = ",".join(g.address for g in servers)
        args = ["php", str(PHP_DIR / "worker.php"), addresses, "php", str(record or "/dev/null")]
        started = [self._spawn(args) for _ in range(count)]
        if wait:
            wait_for_workers(servers, "php.echo", len([p for p in self.procs if p.args == args]))
        return started

    def gearman_cli(self, server: Gearmand, function: str, *command: str) -> subprocess.Popen[bytes]:
        """Start ``gearman -w -f FUNCTION -- COMMAND`` (runs COMMAND per job, workload on stdin)."""
        host, port = server.address.split(":")
        proc = self._spawn([GEARMAN, "-w", "-h", host, "-p", port, "-f", function, "--", *command])
        wait_for_workers([server], function, 1)
        return proc

    def gearworker(self, server: Gearmand, *extra: str) -> subprocess.Popen[bytes]:
        """Start gearworker's own worker with the example handlers."""
        proc = self._spawn(
            [
                sys.executable,
                "-m",
                "gearworker",
                "--server",
                server.address,
                "--handlers",
                str(ROOT / "handlers"),
                *extra,
            ]
        )
        wait_for_workers([server], "echo", 1, timeout=30)
        return proc

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        # SIGKILL: a test worker may be in the middle of a long sleep job; nothing to drain.
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()


@pytest.fixture(name="workers")
def workers_fixture() -> Iterator[Workers]:
    """Start worker processes; they are stopped after the test."""
    w = Workers()
    yield w
    w.stop()


def every_byte(size: int) -> bytes:
    """``size`` bytes cycling through all 256 values, NUL included."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def free_port_address() -> str:
    """A loopback address nothing listens on."""
    return f"127.0.0.1:{free_port()}"


MakeGearmand = Callable[..., Gearmand]
