"""Handlers for the reliability suite: each run is recorded in an sqlite file.

Background jobs are fire-and-forget, so the only proof that a job ran is what
it leaves behind.  ``rec`` (async) and ``rec_cpu`` (``cpu=True``, in a pool
process) sleep the workload's milliseconds, then insert one row (unique id,
function, pid, time) into the ``runs`` table of the file named by
``$GW_RESULTS_DB``; they also note each start in ``starts``.  A unique id
twice in ``runs`` completed twice (an at-least-once duplicate); twice in
``starts`` but once in ``runs`` was interrupted and run again.

The row is written as the last thing before returning, so a worker killed
between the insert and its WORK_COMPLETE produces a duplicate (the job is
re-queued), never a lost job.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

from gearworker import CpuJob, Job, handler

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runs (uniq TEXT NOT NULL, function TEXT NOT NULL, pid INTEGER, t REAL);"
    "CREATE TABLE IF NOT EXISTS starts (uniq TEXT NOT NULL, function TEXT NOT NULL, pid INTEGER, t REAL)"
)
_db: sqlite3.Connection | None = None
_db_pid = 0


def connect(path: str) -> sqlite3.Connection:
    """An autocommit connection in WAL mode that waits (not fails) while another process writes."""
    db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout = 60000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL survives a killed process, which is all we need
    db.executescript(_SCHEMA)
    return db


def _record(job: Job | CpuJob, table: str = "runs") -> None:
    global _db, _db_pid
    # One connection per process; a pool child must never reuse its parent's.
    if _db is None or _db_pid != os.getpid():
        _db = connect(os.environ["GW_RESULTS_DB"])
        _db_pid = os.getpid()
    _db.execute(
        f"INSERT INTO {table} VALUES (?, ?, ?, ?)", (job.unique.decode(), job.function, os.getpid(), time.time())
    )


def _millis(job: Job | CpuJob) -> float:
    text = job.workload.strip()
    return float(text) / 1000 if text else 0.0


@handler("rec")
async def rec(job: Job) -> str:
    """Sleep the workload's milliseconds on the event loop, then record the run."""
    _record(job, "starts")
    await asyncio.sleep(_millis(job))
    _record(job)
    return "ok"


@handler("rec_cpu", cpu=True)
def rec_cpu(job: CpuJob) -> str:
    """Block the pool process for the workload's milliseconds, then record the run."""
    _record(job, "starts")
    time.sleep(_millis(job))
    _record(job)
    return "ok"


@handler("echo")
async def echo(job: Job) -> bytes:
    """Return the workload; records nothing (the soak test counts results itself)."""
    return job.workload


@handler("cpu_echo", cpu=True)
def cpu_echo(job: CpuJob) -> bytes:
    """Return the workload from a pool process; records nothing."""
    return job.workload
