"""``gearworker failed list | show ID | retry ID | purge``: the records of jobs that failed for good.

The store is the ``failed_jobs`` setting (or ``--store PATH``).  ``retry``
submits the job again as a background job, with its workload and unique id,
and removes the record once the job server has it (if the job fails again,
the worker writes a new record); the records that repeat it (the same
function and unique id: gearmand ran the job again after a worker died
between its record and its report) go with it.  Exit codes: 0 ok, 1 no such record (or a
truncated workload without ``--force``), 2 usage, settings or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
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
    ls.add_argument("--function", metavar="F", help="only this function's records")
    ls.add_argument("--limit", type=int, metavar="N")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one record in full")
    show.add_argument("id", metavar="ID")
    show.add_argument("--workload", action="store_true", help="write only the workload's bytes to stdout")
    retry = actions.add_parser(
        "retry", help="submit the job again as a background job, then drop the record and its repeats"
    )
    retry.add_argument("id", metavar="ID")
    retry.add_argument("--force", action="store_true", help="retry even if only part of the workload was kept")
    retry.add_argument(
        "--server",
        dest="servers",
        action="append",
        metavar="HOST:PORT",
        help="job server; repeat for several (default: settings)",
    )
    purge = actions.add_parser("purge", help="delete records (all, or filtered)")
    purge.add_argument("--function", metavar="F")
    purge.add_argument("--older-than", type=float, metavar="SECONDS", help="only records older than this")
    for p in (ls, show, retry, purge):
        p.add_argument("--settings", metavar="PATH", help="settings file (default: $GEARWORKER_SETTINGS)")
        p.add_argument("--store", metavar="PATH", help="the failed_jobs store (default: the setting)")
    failed.set_defaults(func=cmd_failed)


def _store(args: argparse.Namespace) -> tuple[Any, Any]:
    from ..config import load
    from .store import open_store

    settings = load(args.settings)
    path = args.store or settings.failed_jobs
    if not path:
        raise ConfigError(
            "no failed-jobs store is configured: set failed_jobs or pass --store",
            file=settings.source,
            setting="failed_jobs",
        )
    return settings, open_store(path, workload_limit=settings.failed_workload_limit)


def cmd_failed(args: argparse.Namespace) -> int:
    """``gearworker failed ACTION``."""
    from .store import FailedStoreError

    try:
        settings, store = _store(args)
        if args.action == "list":
            return _list(store, args)
        if args.action == "show":
            return _show(store, args)
        if args.action == "retry":
            return asyncio.run(_retry(store, settings, args))
        count = store.purge(function=args.function, older_than=args.older_than)
        print(f"purged {count} record{'s' if count != 1 else ''}")
        return EXIT_OK
    except FailedStoreError as e:
        print(f"gearworker: {e}", file=sys.stderr)
        return EXIT_NOT_FOUND if str(e).startswith("no failed job") else EXIT_ERROR


def _list(store: Any, args: argparse.Namespace) -> int:
    from ..client.cli import format_table

    jobs = store.list(function=args.function, limit=args.limit)
    if args.json:
        for job in jobs:
            print(json.dumps(job.summary()))
        return EXIT_OK
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


def _show(store: Any, args: argparse.Namespace) -> int:
    job = store.get(args.id)
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


async def _retry(store: Any, settings: Any, args: argparse.Namespace) -> int:
    from ..client import Client
    from ..errors import ConnectionLost, NoServerAvailable

    job = store.get(args.id)
    if job.truncated and not args.force:
        print(
            f"gearworker: record {job.id} kept {len(job.workload)} of {job.workload_size} workload bytes: "
            "retrying would run a different job (--force to do it anyway)",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    servers = args.servers or settings.servers or [f"127.0.0.1:{settings.local_gearmand_port}"]
    try:
        async with Client(servers, connect_timeout=settings.connect_timeout) as client:
            handle = await client.submit_background(job.function, job.workload, unique=job.unique or None)
    except (NoServerAvailable, ConnectionLost) as e:
        print(f"gearworker: {e}", file=sys.stderr)
        return EXIT_ERROR
    store.delete(job.id)
    if job.unique:  # its repeats are the same job, submitted again just now
        for other in store.list(function=job.function):
            if other.unique == job.unique:
                store.delete(other.id)
    print(handle.decode(errors="replace"))
    return EXIT_OK
