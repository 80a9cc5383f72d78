"""``gearworker submit`` and ``gearworker status``: the client from a shell.

``submit`` writes a foreground job's result, byte for byte, to stdout and its
progress to stderr; a background job prints its handle.  ``status`` prints
the servers' function table (or, with ``--workers``, the connected workers,
or with ``--handle``/``--unique`` one job's status).  Exit codes: 0 ok, 1 the
job failed or timed out, 2 usage, settings or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["register"]

EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR = 0, 1, 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client sub-commands to the ``gearworker`` command line."""
    submit = sub.add_parser(
        "submit",
        help="submit a job and print its result (or, with -b, its handle)",
        description="Submit a job. The result goes to stdout unchanged; progress to stderr.",
    )
    submit.add_argument("function", metavar="FUNC", help="function name")
    submit.add_argument(
        "payload",
        metavar="PAYLOAD",
        nargs="?",
        default=None,
        help="workload; '-' reads it from stdin (binary safe); omitted: empty",
    )
    submit.add_argument("-b", "--background", action="store_true", help="queue a background job, print its handle")
    submit.add_argument("-p", "--priority", choices=["high", "normal", "low"], default="normal")
    submit.add_argument("-u", "--unique", metavar="U", help="unique id (jobs with the same id are coalesced)")
    submit.add_argument("-t", "--timeout", type=float, metavar="SECONDS", help="give up waiting after this long")
    submit.add_argument(
        "--when",
        metavar="TIME",
        type=_when,
        help="run a background job later: ISO date-time or +SECONDS (SUBMIT_JOB_EPOCH)",
    )
    submit.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    _common(submit)
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="print the job servers' functions, workers or one job's status")
    status.add_argument("-w", "--workers", action="store_true", help="list the connected workers instead")
    status.add_argument("--handle", metavar="H", help="status of the job with this handle")
    status.add_argument("--unique", metavar="U", help="status of the job with this unique id")
    _common(status)
    status.set_defaults(func=cmd_status)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        dest="servers",
        action="append",
        metavar="HOST:PORT",
        help="job server; repeat for several (default: settings, else 127.0.0.1:4730)",
    )
    p.add_argument("--settings", metavar="PATH", help="settings file (default: $GEARWORKER_SETTINGS or ./settings.py)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="error")


def _when(text: str) -> datetime.datetime:
    if text.startswith("+"):
        return datetime.datetime.now() + datetime.timedelta(seconds=float(text[1:]))
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date-time or +SECONDS: {text!r}") from None


def _client(args: argparse.Namespace) -> Any:
    from ..config import load
    from ..logs import configure as configure_logs
    from .api import Client

    configure_logs(args.log_level, "auto")
    settings = load(args.settings)
    return Client.from_settings(settings, args.servers or None)


def cmd_submit(args: argparse.Namespace) -> int:
    """``gearworker submit``."""
    if args.when is not None and not args.background:
        print("gearworker: --when needs --background", file=sys.stderr)
        return EXIT_ERROR
    payload = sys.stdin.buffer.read() if args.payload == "-" else (args.payload or "").encode()
    return asyncio.run(_submit(args, payload))


async def _submit(args: argparse.Namespace, payload: bytes) -> int:
    from ..errors import ConnectionLost, JobFailed, JobTimeout, NoServerAvailable

    async with _client(args) as client:
        try:
            if args.background:
                handle = await client.submit_background(
                    args.function, payload, priority=args.priority, unique=args.unique, when=args.when
                )
                print(handle.decode(errors="replace"))
                return EXIT_OK
            progress = None if args.quiet else _ProgressPrinter(sys.stderr)
            result = await client.submit(
                args.function,
                payload,
                priority=args.priority,
                unique=args.unique,
                timeout=args.timeout,
                on_progress=progress,
            )
        except JobFailed as e:
            print(f"gearworker: job failed: {e.message}", file=sys.stderr)
            return EXIT_JOB_FAILED
        except JobTimeout as e:
            print(f"gearworker: {e}", file=sys.stderr)
            return EXIT_JOB_FAILED
        except (NoServerAvailable, ConnectionLost) as e:
            print(f"gearworker: {e}", file=sys.stderr)
            return EXIT_ERROR
    sys.stdout.buffer.write(result)
    sys.stdout.buffer.flush()
    return EXIT_OK


class _ProgressPrinter:
    """Shows a foreground job's WORK_STATUS/DATA/WARNING as lines on stderr."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: Any) -> None:
        if event.kind == "status":
            percent = f" ({100 * event.fraction:.0f}%)" if event.fraction is not None else ""
            line = f"progress {event.numerator}/{event.denominator}{percent}"
        else:
            text = event.data.decode(errors="replace")
            line = f"{event.kind}: {text if len(text) <= 200 else text[:200] + '...'}"
        print(line, file=self.out, flush=True)


def cmd_status(args: argparse.Namespace) -> int:
    """``gearworker status``."""
    return asyncio.run(_status(args))


async def _status(args: argparse.Namespace) -> int:
    from ..errors import GearworkerError

    async with _client(args) as client:
        if args.handle or args.unique:
            return await _job_status(client, args)
        command = "workers" if args.workers else "status"
        answers: dict[str, list[str]] = {}
        for server in client.servers:
            try:
                answers[server.address] = await client.admin(command, server=server.address)
            except (OSError, TimeoutError, GearworkerError) as e:
                print(f"gearworker: {server.address} unreachable: {e or type(e).__name__}", file=sys.stderr)
        if not answers:
            return EXIT_ERROR
        many = len(client.servers) > 1
        rows = _workers_table(answers, many) if args.workers else _status_table(answers, many)
        print(format_table(rows))
        return EXIT_OK if len(answers) == len(client.servers) else EXIT_ERROR


async def _job_status(client: Any, args: argparse.Namespace) -> int:
    from ..errors import NoServerAvailable

    try:
        if args.handle:
            status = await client.status(args.handle.encode())
        else:
            status = await client.status_unique(args.unique)
    except NoServerAvailable as e:
        print(f"gearworker: {e}", file=sys.stderr)
        return EXIT_ERROR
    rows = [["KNOWN", "RUNNING", "NUMERATOR", "DENOMINATOR"] + (["WAITING"] if status.waiting is not None else [])]
    rows.append(
        [_yes(status.known), _yes(status.running), str(status.numerator), str(status.denominator)]
        + ([str(status.waiting)] if status.waiting is not None else [])
    )
    print(format_table(rows))
    return EXIT_OK


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _status_table(answers: dict[str, list[str]], many: bool) -> list[list[str]]:
    from ..protocol import StatusRow

    # WAITING is gearmand's total minus the running jobs: its own "queued" column counts both.
    rows = [(["SERVER"] if many else []) + ["FUNCTION", "WAITING", "RUNNING", "WORKERS"]]
    for address, lines in answers.items():
        for r in sorted((StatusRow.parse(line) for line in lines), key=lambda r: r.function):
            waiting = max(0, r.queued - r.running)
            rows.append(([address] if many else []) + [r.function, str(waiting), str(r.running), str(r.workers)])
    return rows


def _workers_table(answers: dict[str, list[str]], many: bool) -> list[list[str]]:
    from ..protocol import WorkerRow

    rows = [(["SERVER"] if many else []) + ["FD", "ADDRESS", "CLIENT-ID", "FUNCTIONS"]]
    for address, lines in answers.items():
        for w in (WorkerRow.parse(line) for line in lines):
            if w.functions:  # connections with no function are clients (including this one)
                rows.append(([address] if many else []) + [str(w.fd), w.address, w.client_id, " ".join(w.functions)])
    return rows


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns (numbers right-aligned) separated by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [all(row[i].isdigit() for row in rows[1:]) and len(rows) > 1 for i in range(len(widths))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
