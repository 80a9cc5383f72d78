"""Start and stop real gearmand processes for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GEARMAND = shutil.which("gearmand") or "/usr/sbin/gearmand"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


@dataclass
class Gearmand:
    """One gearmand on loopback; ``restart()`` keeps its port (and sqlite queue)."""

    port: int = field(default_factory=free_port)
    threads: int = 0
    sqlite: Path | None = None
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="gearmand-", suffix=".log")[1]))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Gearmand:
        if not os.path.exists(GEARMAND):
            raise RuntimeError("gearmand is not installed: apt-get install gearman-job-server gearman-tools")
        cmd = [
            GEARMAND,
            "--listen=127.0.0.1",
            f"--port={self.port}",
            f"--threads={self.threads}",
            f"--log-file={self.log}",
            "--verbose=WARNING",
            *self.extra,
        ]
        if self.sqlite is not None:
            cmd += ["--queue-type=libsqlite3", f"--libsqlite3-db={self.sqlite}"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gearmand did not start; log: {self.log.read_text()[-2000:]}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Send one text admin command and return the raw answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(command.encode() + b"\n")
            data = b""
            multi = command.split()[0] in ("status", "workers") or command.startswith("show")
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                done = data == b".\n" or data.endswith(b"\n.\n") if multi else data.endswith(b"\n")
                if done:
                    break
            return data.decode()

    def status(self) -> dict[str, tuple[int, int, int]]:
        """``status`` as {function: (queued, running, workers)}."""
        rows = {}
        for line in self.admin("status").splitlines():
            if line == ".":
                break
            name, q, r, w = line.rsplit("\t", 3)
            rows[name] = (int(q), int(r), int(w))
        return rows


@contextlib.contextmanager
def running_gearmand(**kwargs: Any) -> Iterator[Gearmand]:
    g = Gearmand(**kwargs).start()
    try:
        yield g
    finally:
        g.stop()
