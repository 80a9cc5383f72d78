"""The ``gearworker`` command line: ``run``, ``check``, ``stop``, ``submit``, ``status``, ``web``, ``failed``,
``exporter``.

``python -m gearworker [flags]`` is the same as ``gearworker run [flags]``:
:mod:`gearworker.app.launch` runs first, starts catching stop signals when
the command runs the worker, and calls :func:`main` with a command always
first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..errors import ConfigError
from ..procs import is_running

__all__ = ["build_parser", "main"]


def _add_settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", metavar="PATH", help="settings file (default: $GEARWORKER_SETTINGS or ./settings.py)")
    p.add_argument(
        "--server",
        dest="servers",
        action="append",
        metavar="HOST:PORT",
        help="job server; repeat for several (default: settings, else a local gearmand)",
    )
    p.add_argument("--handlers", dest="handlers_dir", metavar="DIR", help="folder of handler modules")
    p.add_argument("--concurrency", type=int, metavar="N", help="jobs in flight at once, all handlers together")
    p.add_argument("--processes", type=int, metavar="N", help="process pool size for cpu=True handlers")
    p.add_argument("--max-tasks-per-child", type=int, metavar="N", help="recycle pool processes after N jobs")
    p.add_argument("--grace-period", type=float, metavar="SECONDS", help="time in-flight jobs get after SIGTERM")
    p.add_argument("--pid-file", metavar="PATH")
    p.add_argument("--log-file", metavar="PATH")
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus /metrics and /healthz here")
    p.add_argument("--client-id", metavar="ID", help="name shown by gearadmin --workers")


_OVERRIDES = (
    "servers",
    "handlers_dir",
    "concurrency",
    "processes",
    "max_tasks_per_child",
    "grace_period",
    "pid_file",
    "log_file",
    "log_format",
    "log_level",
    "metrics",
    "client_id",
)


def load_settings(args: argparse.Namespace) -> Any:
    """Settings from the file, the environment and the flags in ``args``."""
    from ..config import load

    overrides = {name: getattr(args, name, None) for name in _OVERRIDES}
    return load(args.settings, overrides=overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gearworker", description="An asyncio worker server for Gearman.")
    parser.add_argument("--version", action="version", version=f"gearworker {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run the worker (the default command)")
    _add_settings_flags(run)
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="load settings and handlers, print what would run")
    _add_settings_flags(check)
    check.set_defaults(func=cmd_check)
    stop = sub.add_parser("stop", help="signal the running worker (found by its pid file) and wait for it")
    stop.add_argument("--settings", metavar="PATH")
    stop.add_argument("--pid-file", metavar="PATH")
    stop.add_argument("--timeout", type=float, default=None, help="seconds to wait (default: grace period + 10)")
    stop.set_defaults(func=cmd_stop)
    from ..client import cli as client_cli
    from ..exporter import cli as exporter_cli
    from ..failed import cli as failed_cli
    from ..web import cli as web_cli

    client_cli.register(sub)
    failed_cli.register(sub)
    web_cli.register(sub)
    exporter_cli.register(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from ..logs import configure as configure_logs
    from ..logs import flush as flush_logs
    from ..procs import keep_big_buffers
    from .check import load_handlers

    keep_big_buffers()  # photo-sized payloads: see its docstring for what it saves
    settings = load_settings(args)
    configure_logs(settings.log_level, settings.log_format, settings.log_file)
    registry = load_handlers(settings)
    try:
        # A stop requested while we start up is a clean stop: gearworker.app.launch has been
        # catching the stop signals since the process started, and the server replays them.
        return _run_loop(_serve(settings, registry, args.early_signals))
    finally:
        flush_logs()  # the last loop turn's lines (the atexit hook would too; this keeps them before any traceback)
        # The worker has stopped; the interpreter's exit is left, during which Python gives the signals
        # their default action back: a stop sent then would kill the process (exit -15), so ignore it.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)


async def _serve(settings: Any, registry: Any, early: Sequence[int]) -> int:
    from .server import Server
    from .signals import Signals, exit_on_stop_signal

    server = Server(settings, registry)
    Signals(server).install(early)
    try:
        code = await server.serve()
    except BaseException:
        exit_on_stop_signal(1)
        raise
    exit_on_stop_signal(code)
    return code


def _run_loop(coro: Any) -> int:
    try:
        import uvloop
    except ImportError:  # uvloop is a dependency, but keep running where it cannot install
        return int(asyncio.run(coro))
    return int(uvloop.run(coro))


def cmd_check(args: argparse.Namespace) -> int:
    from .check import describe, load_handlers

    settings = load_settings(args)
    print(describe(settings, load_handlers(settings)))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from ..config import load
    from .pidfile import read_pid

    settings = load(args.settings, overrides={"pid_file": args.pid_file})
    if not settings.pid_file:
        raise ConfigError(
            "no pid file is configured: pass --pid-file or set pid_file", file=settings.source, setting="pid_file"
        )
    pid = read_pid(settings.pid_file)
    if pid is None:
        print(f"gearworker is not running (no pid in {settings.pid_file})", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"gearworker is not running (pid {pid} is gone)", file=sys.stderr)
        return 1
    deadline = time.monotonic() + (args.timeout if args.timeout is not None else settings.grace_period + 10)
    while time.monotonic() < deadline:
        if not is_running(pid):
            print(f"gearworker (pid {pid}) stopped")
            return 0
        time.sleep(0.05)
    print(f"gearworker (pid {pid}) is still running", file=sys.stderr)
    return 1


def main(argv: Sequence[str], *, early_signals: Sequence[int] = ()) -> int:
    """Run one command: ``argv`` starts with it (``run``, ``check``, ...), or is ``--help`` or ``--version``.

    ``early_signals``: the stop and reload signals caught since the process
    started (a live list: :class:`gearworker.app.launch.EarlySignals`), which
    ``run`` replays once its event loop handles signals.
    """
    parser = build_parser()
    args = parser.parse_args(list(argv))
    args.early_signals = early_signals
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"gearworker: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
