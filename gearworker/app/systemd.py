"""systemd's notify protocol (``sd_notify``), without libsystemd.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a filesystem path or,
with a leading ``@``, an abstract socket) and waits for ``READY=1`` before it
considers the service started.  ``STOPPING=1`` tells it a shutdown is under
way, ``STATUS=...`` shows up in ``systemctl status``, and with ``WatchdogSec=``
it expects ``WATCHDOG=1`` more often than ``WATCHDOG_USEC``, or it kills and
restarts the service.

Outside systemd ``NOTIFY_SOCKET`` is unset and every call is a no-op, so the
worker can call these unconditionally.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

__all__ = ["Notifier", "run_watchdog"]

log = structlog.get_logger("gearworker.systemd")


class Notifier:
    """Sends notify messages to the service manager, or nothing when not under one."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False
        if address:
            # Abstract sockets are written "@name" in the environment; the
            # kernel wants a leading NUL byte instead.
            self._target = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the event loop on a full receive queue: a lost
            # STATUS line is better than a stalled worker.
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, unset_environment: bool = True) -> Notifier:
        """The notifier systemd asked for, read from ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``.

        With ``unset_environment`` (the default) the variables are removed
        from ``os.environ`` so that pool processes and subprocesses started
        later do not inherit them and talk to systemd in our name.
        """
        environ = os.environ if env is None else env
        address = environ.get("NOTIFY_SOCKET") or None
        usec = _watchdog_usec(environ)
        if unset_environment and env is None:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        """True when a service manager is listening."""
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False if not sent."""
        if self._sock is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            self._sock.sendto(message, self._target)
        except OSError as e:
            # systemd may be restarting or the socket full; the service keeps
            # running, so report once and carry on.
            if not self._warned:
                log.warning("systemd.notify_failed", socket=self.address, error=str(e))
                self._warned = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Tell systemd the worker is connected and serving (``READY=1``)."""
        lines = ["READY=1"]
        if status:
            lines.append(_status_line(status))
        return self.notify(*lines)

    def stopping(self, status: str = "") -> bool:
        """Tell systemd a shutdown has begun (``STOPPING=1``)."""
        return self.notify("STOPPING=1", *([_status_line(status)] if status else []))

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.notify(_status_line(text))

    def watchdog(self) -> bool:
        """Ping the watchdog (``WATCHDOG=1``)."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop (``EXTEND_TIMEOUT_USEC``)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WatchdogSec``), or None when not asked for."""
        if self._watchdog_usec is None or self._sock is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        """Close the socket; later calls become no-ops."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __repr__(self) -> str:
        return f"<Notifier {self.address or 'disabled'} watchdog={self.watchdog_interval()}>"


def _status_line(text: str) -> str:
    # A newline would start a new assignment: keep STATUS to one line.
    return "STATUS=" + " ".join(text.split())


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` when it is meant for this process (``WATCHDOG_PID`` unset or ours)."""
    text = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(text)
    except ValueError:
        return None
    return usec if usec > 0 else None


async def run_watchdog(notifier: Notifier, healthy: Callable[[], bool]) -> None:
    """Ping the watchdog every half interval while ``healthy()`` is True.

    When the worker stops being healthy (no server connected, the pool
    broken) the pings stop and systemd restarts the service after
    ``WatchdogSec``.  Returns at once when no watchdog was asked for; cancel
    the task to stop it.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    log.debug("systemd.watchdog_started", interval=interval)
    was_healthy = True
    while True:
        ok = healthy()
        if ok:
            notifier.watchdog()
        elif was_healthy:
            log.warning("systemd.watchdog_withheld", reason="worker unhealthy", interval=interval)
        was_healthy = ok
        await asyncio.sleep(interval)
