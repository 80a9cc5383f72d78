"""How the stop and reload signals reach a :class:`~gearworker.app.server.Server`: they only set its events.

The first SIGTERM or SIGINT sets :attr:`Server.should_exit` (drain within
the grace period), a second one :attr:`Server.force_exit` (stop at once) and
ends the process with ``os._exit`` should the forced stop, or the exit after
it, take longer than :data:`FORCED_EXIT_TIMEOUT`.  SIGHUP asks the server's
:class:`~gearworker.app.reload.Reloader` for a reload.  Only the command
line installs them: tests drive ``Server.serve()`` without signals.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from ..logs import flush as flush_logs

if TYPE_CHECKING:
    from .server import Server

__all__ = ["FORCED_EXIT_TIMEOUT", "Signals", "exit_after", "exit_on_stop_signal"]

log = structlog.get_logger("gearworker.server")

#: After a second signal: seconds until ``os._exit`` ends a process whose forced stop or exit hangs.
FORCED_EXIT_TIMEOUT = 1.0


class Signals:
    """Routes the process's SIGTERM, SIGINT and SIGHUP to ``server``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._exit_armed = False

    def handle(self, signum: int) -> None:
        """First signal: drain gracefully.  Second: stop at once."""
        server = self.server
        if server.should_exit.is_set():
            log.warning("server.force_exit", signal=signal.Signals(signum).name)
            server.force_exit.set()
            if not self._exit_armed:
                self._exit_armed = True
                exit_after(FORCED_EXIT_TIMEOUT)
        else:
            log.info("server.stopping", signal=signal.Signals(signum).name, grace=server.settings.grace_period)
            server.should_exit.set()

    def install(self, early: Sequence[int] = ()) -> None:
        """Route SIGTERM and SIGINT to :meth:`handle`, SIGHUP to a reload.

        ``early`` are the signals caught before the loop ran
        (:class:`gearworker.app.launch.EarlySignals`): replayed now.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle, sig)
        loop.add_signal_handler(signal.SIGHUP, self.server.reloader.request)
        for signum in early:
            if signum == signal.SIGHUP:
                self.server.reloader.request()  # done once started
            else:
                self.handle(signum)


def exit_on_stop_signal(code: int) -> None:
    """From now on SIGTERM and SIGINT end the process at once with ``code``, and SIGHUP is ignored.

    For once ``Server.serve()`` has returned and only the process's exit is
    left: the loop's close would give the signals their default action
    back, and a stop sent then would kill the process (exit -15).
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)  # else the loop's close resets what is set here
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: _exit_now(code))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def exit_after(seconds: float) -> None:
    """End the process with ``os._exit(0)`` in ``seconds`` unless it has exited by then (a daemon thread).

    A forced stop's last resort, when something will not give way (a thread
    the exit waits for, a task that swallows its cancel).  Nothing is left
    behind: pool processes and the local gearmand die with us
    (PR_SET_PDEATHSIG), gearmand re-queues the jobs of our connections; a pid
    file left is stale, and replaced at the next start.
    """

    def run() -> None:
        time.sleep(seconds)
        log.error("server.exit_hung", waited=seconds)
        _exit_now(0)

    threading.Thread(target=run, name="forced exit", daemon=True).start()


def _exit_now(code: int) -> None:
    flush_logs()
    os._exit(code)
