"""The first code ``gearworker`` and ``python -m gearworker`` run: stop signals count from here on.

Importing the command line, the settings and the handlers takes 0.1-0.5 s.
A SIGTERM meanwhile (systemd, a test, a chaos monkey) must be a clean stop,
exit 0, not death by the default action: the chaos test saw exit -15 from a
worker restarted just before the final stop, still importing.  So this module
imports nothing but :mod:`signal` (:mod:`os` and :mod:`sys` come loaded with
the interpreter), catches the stop signals at once when the command runs the
worker (any other command keeps Ctrl-C as it is), and only then imports the
command line.  ``import gearworker`` itself stays light for
the same reason.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "EarlySignals", "main", "runs_worker"]

#: The sub-commands; anything else (or nothing) means ``run``.
COMMANDS = ("run", "check", "stop", "submit", "status", "web", "failed", "exporter")


class EarlySignals:
    """Catches SIGTERM, SIGINT and SIGHUP from process start until the event loop takes them over.

    A stop requested before the loop runs is replayed then as a clean stop; a
    reload requested then (SIGHUP, whose default action also kills) is done
    once the worker has started.  A second stop ends the process at once:
    nothing has started yet that needs stopping (no pool, connection or pid
    file), and a handler module may be hanging at import.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: object) -> None:
        if signum != signal.SIGHUP and any(s != signal.SIGHUP for s in self.received):
            os.write(2, f"gearworker: second {signal.Signals(signum).name} while starting: exiting\n".encode())
            os._exit(0)
        self.received.append(signum)


def runs_worker(argv: Sequence[str]) -> bool:
    """True when the command line runs the worker (``run``, or no sub-command)."""
    if not argv:
        return True
    return argv[0] == "run" or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gearworker`` and ``python -m gearworker``."""
    args = list(sys.argv[1:] if argv is None else argv)
    early: list[int] = []
    if runs_worker(args):
        early = EarlySignals().received  # appended to until the event loop takes the signals over
        if not args or args[0] != "run":
            args.insert(0, "run")
    from ..procs import quiet_on_closed_pipe
    from .cli import main as cli_main

    return quiet_on_closed_pipe(lambda: cli_main(args, early_signals=early))
