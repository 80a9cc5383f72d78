"""``gearworker failed list | show ID | retry ID... | purge``: the records of jobs that failed for good.

The store is the ``failed_jobs`` setting (or ``--store PATH``).  Reading,
filtering and deleting go through :mod:`.query`, retrying through
:mod:`.retry`: the same code as the web app's console.  ``retry`` submits the
job again as a background job, with its workload and unique id, and removes
the record once the job server has it, with the records that repeat it (the
same function and unique id: gearmand ran the job again after a worker died
between its record and its report); if the job fails again, the worker
writes a new record.  Exit codes: 0 ok, 1 no such record (or a truncated
workload without ``--force``), 2 usage, settings or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError

__all__ = ["cmd_failed", "register"]

EXIT_OK, EXIT_NOT_FOUND, EXIT_ERROR = 0, 1, 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gearworker failed ...`` to the command line."""
    failed = sub.add_parser(
        "failed",
        help="list, show, retry or purge the records of jobs that failed for good",
        description="Records of finally-failed jobs (the failed_jobs setting).",
    )
    actions = failed.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="one line per record, oldest first")
    _filter_flags(ls)
    ls.add_argument("--newest", action="store_true", help="newest first")
    ls.add_argument("--limit", type=int, metavar="N")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one record in full")
    show.add_argument("id", metavar="ID")
    show.add_argument("--workload", action="store_true", help="write only the workload's bytes to stdout")
    retry = actions.add_parser(
        "retry", help="submit the job again as a background job, then drop the record and its repeats"
    )
    retry.add_argument("ids", nargs="+", metavar="ID")
    retry.add_argument("--force", action="store_true", help="retry even if only part of the workload was kept")
    retry.add_argument(
        "--server",
        dest="servers",
        action="append",
        metavar="HOST:PORT",
        help="job server; repeat for several (default: settings)",
    )
    purge = actions.add_parser("purge", help="delete records (all, or filtered)")
    _filter_flags(purge)
    purge.add_argument("--older-than", type=float, metavar="SECONDS", help="only records older than this")
    for p in (ls, show, retry, purge):
        p.add_argument("--settings", metavar="PATH", help="settings file (default: $GEARWORKER_SETTINGS)")
        p.add_argument("--store", metavar="PATH", help="the failed_jobs store (default: the setting)")
    failed.set_defaults(func=cmd_failed)


def _filter_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--function", metavar="F", help="only this function's records")
    p.add_argument("--grep", metavar="TEXT", help="only records with TEXT in the error or unique id (any case)")
    p.add_argument("--since", type=_time, metavar="TIME", help="failed at or after TIME (Unix seconds or ISO 8601)")
    p.add_argument("--until", type=_time, metavar="TIME", help="failed before TIME")


def _time(text: str) -> float:
    from .query import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not Unix seconds or an ISO 8601 time") from None


def _filter(args: argparse.Namespace) -> Any:
    import time

    from .query import FailedFilter

    until = args.until
    if getattr(args, "older_than", None) is not None:
        cutoff = time.time() - args.older_than
        until = cutoff if until is None else min(until, cutoff)
    return FailedFilter(function=args.function, text=args.grep or None, since=args.since, until=until)


def _store(args: argparse.Namespace) -> tuple[Any, Any]:
    from ..config import load
    from . import open_query

    settings = load(args.settings)
    path = args.store or settings.failed_jobs
    if not path:
        raise ConfigError(
            "no failed-jobs store is configured: set failed_jobs or pass --store",
            file=settings.source,
            setting="failed_jobs",
        )
    return settings, open_query(path)


def cmd_failed(args: argparse.Namespace) -> int:
    """``gearworker failed ACTION``."""
    from .store import FailedStoreError

    try:
        settings, query = _store(args)
        if args.action == "list":
            return _list(query, args)
        if args.action == "show":
            return _show(query, args)
        if args.action == "retry":
            return asyncio.run(_retry(query, settings, args))
        count = query.delete_matching(_filter(args))
        print(f"purged {count} record{'s' if count != 1 else ''}")
        return EXIT_OK
    except FailedStoreError as e:
        print(f"gearworker: {e}", file=sys.stderr)
        return EXIT_NOT_FOUND if str(e).startswith("no failed job") else EXIT_ERROR


def _records(query: Any, args: argparse.Namespace) -> Iterator[Any]:
    """The records to list, a page at a time (never all in memory)."""
    filt, cursor, left = _filter(args), None, args.limit
    while left is None or left > 0:
        size = 500 if left is None else min(500, left)
        page = query.page(filt, cursor=cursor, limit=size, oldest_first=not args.newest, total=False)
        yield from page.entries
        if left is not None:
            left -= len(page.entries)
        if page.next is None:
            return
        cursor = page.next


def _list(query: Any, args: argparse.Namespace) -> int:
    from ..client.cli import format_table

    if args.json:
        for entry in _records(query, args):
            print(json.dumps(entry.summary()))
        return EXIT_OK
    jobs = list(_records(query, args))
    rows = [["ID", "FAILED (UTC)", "FUNCTION", "ATTEMPTS", "BYTES", "UNIQUE", "REPEAT OF", "ERROR"]]
    for job in jobs:
        summary = job.summary()
        error = job.error if len(job.error) <= 60 else job.error[:57] + "..."
        rows.append(
            [
                job.id,
                summary["failed_at_utc"],
                job.function,
                str(job.attempts),
                f"{job.workload_size}{'*' if job.truncated else ''}",
                job.unique or "-",
                job.repeat_of or "-",
                error,
            ]
        )
    print(format_table(rows))
    return EXIT_OK


def _show(query: Any, args: argparse.Namespace) -> int:
    job = query.get(args.id)
    if args.workload:
        sys.stdout.buffer.write(job.workload)
        sys.stdout.buffer.flush()
        return EXIT_OK
    summary = job.summary()
    try:
        summary["workload"] = job.workload.decode()
    except UnicodeDecodeError:
        summary["workload_base64"] = base64.b64encode(job.workload).decode()
    print(json.dumps(summary, indent=2))
    return EXIT_OK


async def _retry(query: Any, settings: Any, args: argparse.Namespace) -> int:
    from ..client import Client
    from ..errors import ConnectionLost, NoServerAvailable
    from ..logs import configure as configure_logs
    from .retry import retry_jobs, truncated_reason

    configure_logs("warning", "auto")  # the client's log lines to stderr: stdout is the handles, one a line
    jobs = [query.get(job_id) for job_id in args.ids]  # a missing one stops everything before any submit
    status = EXIT_OK
    for job in jobs:
        if job.truncated and not args.force:
            print(f"gearworker: {truncated_reason(job)} (--force to do it anyway)", file=sys.stderr)
            status = EXIT_NOT_FOUND
    jobs = [job for job in jobs if args.force or not job.truncated]
    if not jobs:
        return status
    try:
        async with Client.from_settings(settings, args.servers or None) as client:
            results = await retry_jobs(client, query, jobs, force=args.force)
    except (NoServerAvailable, ConnectionLost) as e:
        print(f"gearworker: {e}", file=sys.stderr)
        return EXIT_ERROR
    for result in results:
        if result.ok:
            print(result.handle)
        else:
            print(f"gearworker: record {result.id}: {result.problem}", file=sys.stderr)
            status = EXIT_ERROR
    return status
