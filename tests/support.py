"""Helpers shared by the tests, each written once.

- waiting: :func:`wait_until`;
- real ``python -m gearworker`` processes: :class:`WorkerProcess`, :func:`start_worker`, and
  :func:`run_gearworker` for one command, all in a :func:`clean_env`;
- workers nobody here wrote, for the client tests: :class:`Workers` (php-gearman, Perl, ``gearman -w``);
- photos: :func:`photo_jpeg`;
- TLS settings that connect nowhere: :func:`write_test_ca` (tests/network/netlab.py makes working certificates).

The test files import them as ``from support import ...`` (conftest.py puts tests/ on sys.path).
Beside this module: ``gearmand.py`` starts real gearmand processes, ``fakepeer.py`` holds the
protocol peers a real server or client cannot be made to be, ``images/samples.py`` makes test
images, and ``reliability/harness.py`` is the reliability suite's own.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from gearmand import Gearmand, free_port

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "handlers"
TEST_HANDLERS = Path(__file__).resolve().parent / "handlers_test"

T = TypeVar("T")


# -- waiting ----------------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 15.0,
    *,
    what: str = "the condition",
    interval: float = 0.05,
    detail: Callable[[], str] | None = None,
    process: WorkerProcess | subprocess.Popen[Any] | None = None,
) -> T:
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy, and return that.

    Fails the test (AssertionError) after ``timeout`` seconds, or as soon as ``process`` has exited,
    with a message that names ``what`` and adds ``detail()`` and, for a :class:`WorkerProcess`, the
    end of its log.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        exited = None if process is None else process.poll()
        if exited is not None:
            reason = f"the process exited with {exited}"
        elif time.monotonic() > deadline:
            reason = f"not within {timeout:g} s"
        else:
            time.sleep(interval)
            continue
        message = f"{what}: {reason}"
        if detail is not None:
            message += f"\n{detail()}"
        if isinstance(process, WorkerProcess):
            message += f"\nworker log:\n{process.log_text()[-3000:]}"
        raise AssertionError(message)


# -- worker processes -------------------------------------------------------------------------------


def handlers_dir(tmp_path: Path, **modules: str) -> Path:
    """A handlers folder under ``tmp_path`` holding ``name.py`` with each given source."""
    folder = tmp_path / "handlers"
    folder.mkdir()
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    return folder


@dataclass
class WorkerProcess:
    """One gearworker process; ``log`` holds its JSON log lines.

    Its environment is :func:`clean_env` plus ``env``: nothing from the shell that runs pytest
    configures it.
    """

    servers: Sequence[str]
    handlers: Path = HANDLERS
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="gearworker-", suffix=".log")[1]))

    def start(
        self, *, wait_for: str | None = None, gearmand: Gearmand | None = None, timeout: float = 20.0
    ) -> WorkerProcess:
        """Start; if ``gearmand`` and ``wait_for`` are given, wait until it registered that function."""
        cmd = [sys.executable, "-m", "gearworker", "--handlers", str(self.handlers), "--log-format", "json"]
        for s in self.servers:
            cmd += ["--server", s]
        cmd += self.args
        env = clean_env({"PYTHONUNBUFFERED": "1", **self.env})
        self._out = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._out
        )
        if wait_for is not None:
            assert gearmand is not None, "wait_for needs the gearmand to ask"
            try:
                self.wait_registered(gearmand, wait_for, timeout=timeout)
            except BaseException:
                self.kill()  # not left running by a test that never got hold of it
                raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def poll(self) -> int | None:
        """The exit code, or None while the process runs."""
        assert self.proc is not None
        return self.proc.poll()

    def wait_registered(self, gearmand: Gearmand, function: str, *, timeout: float = 20.0, workers: int = 1) -> None:
        """Wait until ``gearmand`` lists ``workers`` workers for ``function``; fail at once if this one exits."""
        wait_until(
            lambda: gearmand.status().get(function, (0, 0, 0))[2] >= workers,
            timeout,
            what=f"the worker to register {function!r}",
            process=self,
        )

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, if it still runs, and reap it."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_records(self, event: str | None = None) -> list[dict[str, Any]]:
        """Its JSON log records, only those of ``event`` if given (a line still being written is left out)."""
        records = []
        for line in self.log_text().splitlines():
            if not line.startswith("{") or (event is not None and f'"{event}"' not in line):
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if event is None or record.get("event") == event:
                    records.append(record)
        return records


def start_worker(
    servers: Sequence[str],
    *args: str,
    handlers: Path = HANDLERS,
    env: dict[str, str] | None = None,
    wait_for: str | None = None,
    gearmand: Gearmand | None = None,
    timeout: float = 20.0,
) -> WorkerProcess:
    """Start ``python -m gearworker`` for ``servers`` on ``handlers`` with the command-line options ``args``.

    ``env`` is added to a clean environment (:func:`clean_env`).  With ``wait_for``, return once
    ``gearmand`` lists the worker for that function.
    """
    worker = WorkerProcess(servers, handlers=handlers, args=list(args), env=dict(env or {}))
    return worker.start(wait_for=wait_for, gearmand=gearmand, timeout=timeout)


def run_gearworker(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gearworker ARGS`` to its end, ``env`` added to a clean environment; output as text."""
    return subprocess.run(
        [sys.executable, "-m", "gearworker", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(env),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, less what would configure gearworker or systemd from outside the test
    (``GEARWORKER_*``, ``NOTIFY_SOCKET``, ``WATCHDOG_*``), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEARWORKER_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    return {**env, **(extra or {})}


# -- workers nobody here wrote, for the client tests: php-gearman, Perl, ``gearman -w`` --------------

PHP_DIR = Path(__file__).resolve().parent / "php"
PERL_DIR = Path(__file__).resolve().parent / "perl"
GEARMAN = shutil.which("gearman") or "/usr/bin/gearman"
MakeGearmand = Callable[..., Gearmand]  # the gearmand_factory fixture


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

    def perl(self, servers: Sequence[Gearmand]) -> subprocess.Popen[bytes]:
        """Start a Perl Gearman::Worker (tests/perl/worker.pl: the protocol written in Perl) on every server."""
        proc = self._spawn(["perl", str(PERL_DIR / "worker.pl"), ",".join(g.address for g in servers)])
        wait_for_workers(servers, "perl.echo", 1)
        return proc

    def gearman_cli(self, server: Gearmand, function: str, *command: str) -> subprocess.Popen[bytes]:
        """Start ``gearman -w -f FUNCTION -- COMMAND`` (runs COMMAND per job, workload on stdin)."""
        host, port = server.address.split(":")
        proc = self._spawn([GEARMAN, "-w", "-h", host, "-p", port, "-f", function, "--", *command])
        wait_for_workers([server], function, 1)
        return proc

    def gearworker(self, server: Gearmand, *extra: str) -> WorkerProcess:
        """Start gearworker's own worker with the example handlers."""
        w = WorkerProcess([server.address], args=list(extra))
        w.start()
        assert w.proc is not None
        self.procs.append(w.proc)
        w.wait_registered(server, "echo", timeout=30)
        return w

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


# -- images -----------------------------------------------------------------------------------------


def photo_jpeg(
    width: int = 1200,
    height: int = 900,
    *,
    orientation: int | None = None,
    icc: bytes | None = None,
    fill: tuple[int, int, int] | None = None,
    quality: int = 90,
) -> bytes:
    """A real JPEG, made by Pillow: :func:`images.samples.photo` (photo-like, a red mark top-left), or one
    ``fill`` colour; ``orientation`` sets the EXIF orientation tag, ``icc`` embeds a colour profile.

    Made once for each set of arguments (the bytes are the same every time).
    """
    return _photo_jpeg(width, height, orientation, icc, fill, quality)


@functools.cache
def _photo_jpeg(
    width: int, height: int, orientation: int | None, icc: bytes | None, fill: tuple[int, int, int] | None, quality: int
) -> bytes:
    from images import samples  # numpy and Pillow: loaded by the tests that make images only
    from PIL import Image

    image = samples.photo(width, height) if fill is None else Image.new("RGB", (width, height), fill)
    return samples.jpeg(image, orientation=orientation, icc=icc, quality=quality)


# -- TLS settings that connect nowhere ----------------------------------------------------------------

#: A CA certificate ("gearworker unit test CA") whose key was thrown away: settings can name it as
#: ``tls_ca_file`` and build their TLS context, but nothing can be served with it.
TEST_CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBrDCCAVGgAwIBAgIUbM2aTQgljNM18+CAauMQX5wHHZ0wCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXZ2VhcndvcmtlciB1bml0IHRlc3QgQ0EwIBcNMjYxMjA3MDI0
NDEzWhgPMjEyNjExMTMwMjQ0MTNaMCIxIDAeBgNVBAMMF2dlYXJ3b3JrZXIgdW5p
dCB0ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEVrDJ5W10Tnpx/hy4
AFQuMOdbEYvQF7f/E8qOOzh8JAI//OhJyZqUd7QKcF3Waoft7BcXtqsNrx+T+IYw
4meKCKNjMGEwHQYDVR0OBBYEFCbAAAA1Gko7NOG0AUcAmiw9KML0MB8GA1UdIwQY
MBaAFCbAAAA1Gko7NOG0AUcAmiw9KML0MA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0P
AQH/BAQDAgEGMAoGCCqGSM49BAMCA0kAMEYCIQCFguFeUy5/ERZX10ZA/IZo5zGy
VODMElOhAux5agjkxAIhANmdmrwRa7ayQVWSvnZt9pdGPwIO1qwk7+HLOkltEncI
-----END CERTIFICATE-----
"""
TEST_CA_NAME = "gearworker unit test CA"


def write_test_ca(folder: Path) -> Path:
    """:data:`TEST_CA_PEM` as ``folder/ca.pem``, for a ``tls_ca_file`` setting."""
    path = folder / "ca.pem"
    path.write_text(TEST_CA_PEM)
    return path


def ca_names(context: Any) -> list[str]:
    """The common names of the CA certificates an ``ssl.SSLContext`` trusts (from a CA file)."""
    return [dict(rdn[0] for rdn in ca["subject"])["commonName"] for ca in context.get_ca_certs()]
