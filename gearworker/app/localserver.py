"""A local gearmand for development, started when no server is configured."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import structlog

from ..errors import ConfigError
from ..procs import die_with_parent

__all__ = ["KEEPALIVE_FLAGS", "LocalGearmand"]

log = structlog.get_logger("gearworker.localserver")

#: gearmand's own TCP keepalive on its connections.  Without it gearmand never notices a worker that
#: vanished without a FIN (a host cut off, powered off): the job it held stays "running" on a
#: connection that no longer exists, no other worker gets it, and its client waits for its own
#: timeout.  With these, the connection is dropped after 5 s idle + 3 unanswered probes 2 s apart
#: and the job goes to another worker: the client had its result 11-13 s after the cut
#: (tests/network/test_silent_loss.py; docs/reliability.md has the table).
KEEPALIVE_FLAGS = ("--keepalive", "--keepalive-idle=5", "--keepalive-interval=2", "--keepalive-count=3")


def _gearmand_dies_with_us() -> None:  # runs in the child between fork and exec
    die_with_parent(signal.SIGTERM)  # SIGTERM, not SIGKILL: gearmand saves its queue on the way out


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class LocalGearmand:
    """Runs ``gearmand`` on 127.0.0.1 for as long as the worker runs.

    If something already listens on the port it is used as it is (a gearmand
    started earlier, or by ``docker compose``) and left alone on exit.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        if _listening(self.port):
            log.info("gearmand.reused", address=self.address)
            return
        binary = shutil.which("gearmand") or shutil.which("gearmand", path="/usr/sbin:/usr/local/sbin")
        if binary is None:
            raise ConfigError(
                "no job server is configured and gearmand is not installed "
                "(apt-get install gearman-job-server, or set servers)",
                setting="servers",
            )
        logfile = tempfile.NamedTemporaryFile(prefix="gearmand-", suffix=".log", delete=False)  # noqa: SIM115
        # --threads=0: measured 1.26x the throughput of the default (--threads=4) on 2 cores.
        self._proc = subprocess.Popen(
            [
                binary,
                "--listen=127.0.0.1",
                f"--port={self.port}",
                "--threads=0",
                *KEEPALIVE_FLAGS,
                f"--log-file={logfile.name}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_gearmand_dies_with_us,
        )
        for _ in range(200):
            if self._proc.poll() is not None:
                raise ConfigError(
                    f"local gearmand exited with code {self._proc.returncode}; log: {logfile.name}",
                    setting="local_gearmand_port",
                )
            if _listening(self.port):
                log.info("gearmand.started", address=self.address, pid=self._proc.pid, log=logfile.name)
                return
            await asyncio.sleep(0.05)
        raise ConfigError(f"local gearmand did not listen on {self.address} within 10 s", setting="local_gearmand_port")

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the gearmand we started; SIGKILL it if it has not exited within ``timeout`` seconds."""
        if self._proc is None:
            return
        self._proc.terminate()
        deadline = time.monotonic() + timeout
        while self._proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._reap()

    def stop_now(self, timeout: float) -> None:
        """:meth:`stop` from synchronous code (a forced stop): the caller waits up to ``timeout`` seconds."""
        if self._proc is None:
            return
        self._proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout)
        self._reap()

    def _reap(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        log.info("gearmand.stopped", address=self.address)
        self._proc = None
