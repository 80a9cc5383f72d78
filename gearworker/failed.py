"""Durable records of jobs that failed for good, and ``gearworker failed list|show|retry|purge``.

A background job has no client waiting for it: without a record its failure
is one log line.  With the ``failed_jobs`` setting the worker writes a record
of every job that failed after its last attempt: function, handle, unique id,
workload (up to ``failed_workload_limit`` bytes), error, attempts, time and
server.  ``gearworker failed retry ID`` submits it again as a background job.

``failed_jobs`` is either an sqlite database (a path ending in ``.db``,
``.sqlite`` or ``.sqlite3``; stdlib :mod:`sqlite3`, WAL mode, safe for several
worker processes on one host) or a folder (any other path; one JSON file per
record, written atomically, easy to ship or inspect with ``jq``).

Which jobs are recorded: gearmand does not tell a worker whether a job is a
background job (JOB_ASSIGN_UNIQ is the same for both).  Before reporting a
final failure the worker asks the job's server (GET_STATUS_UNIQUE, which
counts the clients waiting for a job): a job with a waiting client is not
recorded, since that client gets the failure.  Background jobs, and
foreground jobs whose client has gone, are recorded.  A job without a unique
id cannot be asked about (gearmand 1.1.20 keeps no unique for it), so it is
recorded whatever its kind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from .errors import GearworkerError
from .middleware import JobInfo, JobResult, Middleware

__all__ = ["FailedJob", "FailedStore", "FailedStoreError", "FolderStore", "RecordFailures", "SqliteStore", "open_store"]

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
#: Outcomes that are failures of the job (not "complete", not "handed_back" to gearmand for another worker).
FAILED_OUTCOMES = frozenset({"fail", "timeout", "crash"})

log = structlog.get_logger("gearworker.failed")


class FailedStoreError(GearworkerError):
    """The failed-jobs store cannot be read or written, or has no such record."""


@dataclass(frozen=True, slots=True)
class FailedJob:
    """One job that failed for good."""

    function: str
    handle: str
    unique: str
    error: str
    attempts: int
    workload: bytes  # at most the store's workload limit
    workload_size: int  # the full workload's size
    server: str = ""
    failed_at: float = 0.0  # Unix time
    id: str = ""

    @property
    def truncated(self) -> bool:
        """True when only the start of the workload was kept: retrying it would run a different job."""
        return len(self.workload) < self.workload_size

    def summary(self) -> dict[str, Any]:
        """Everything but the workload itself, JSON-ready."""
        data = asdict(self)
        del data["workload"]
        data["truncated"] = self.truncated
        data["failed_at_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.failed_at))
        return data


class FailedStore(Protocol):
    """Where failed-job records live."""

    def add(self, job: FailedJob) -> str:
        """Store ``job`` (its workload cut to the limit); return its id."""
        ...

    def list(self, *, function: str | None = None, limit: int | None = None) -> list[FailedJob]:
        """Records, oldest first."""
        ...

    def get(self, job_id: str) -> FailedJob:
        """One record; :class:`FailedStoreError` when there is none."""
        ...

    def delete(self, job_id: str) -> bool:
        """Remove one record; False when there was none."""
        ...

    def purge(self, *, function: str | None = None, older_than: float | None = None) -> int:
        """Remove records (all, of one function, or failed more than ``older_than`` seconds ago); return how many."""
        ...


def open_store(path: str | os.PathLike[str], *, workload_limit: int = 1024 * 1024) -> FailedStore:
    """The store at ``path``: sqlite for ``.db``/``.sqlite``/``.sqlite3``, else a folder."""
    p = Path(path)
    if p.suffix.lower() in SQLITE_SUFFIXES:
        return SqliteStore(p, workload_limit=workload_limit)
    return FolderStore(p, workload_limit=workload_limit)


def _cut(job: FailedJob, limit: int) -> FailedJob:
    return replace(
        job,
        workload=job.workload[:limit],
        workload_size=max(job.workload_size, len(job.workload)),
        failed_at=job.failed_at or time.time(),
    )


class SqliteStore:
    """Records in one sqlite table; each call opens its own connection (the worker writes from a thread)."""

    def __init__(self, path: Path, *, workload_limit: int) -> None:
        self.path = path
        self.workload_limit = workload_limit
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")  # readers (the CLI) never block the writing worker
                db.execute(
                    "CREATE TABLE IF NOT EXISTS failed_jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, failed_at REAL, "
                    "function TEXT, handle TEXT, unique_id TEXT, server TEXT, error TEXT, attempts INTEGER, "
                    "workload BLOB, workload_size INTEGER)"
                )
        except (OSError, sqlite3.Error) as e:
            raise FailedStoreError(f"failed_jobs database {str(path)!r}: {e}") from e

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0)  # several worker processes may write at once
        try:
            with db:  # commit or roll back
                yield db
        except sqlite3.Error as e:
            raise FailedStoreError(f"failed_jobs database {str(self.path)!r}: {e}") from e
        finally:
            db.close()

    _COLUMNS = "id, failed_at, function, handle, unique_id, server, error, attempts, workload, workload_size"

    @staticmethod
    def _row(row: tuple[Any, ...]) -> FailedJob:
        id_, failed_at, function, handle, unique, server, error, attempts, workload, size = row
        return FailedJob(function, handle, unique, error, attempts, bytes(workload), size, server, failed_at, str(id_))

    def add(self, job: FailedJob) -> str:
        job = _cut(job, self.workload_limit)
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO failed_jobs (failed_at, function, handle, unique_id, server, error, attempts, workload, "
                "workload_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.failed_at,
                    job.function,
                    job.handle,
                    job.unique,
                    job.server,
                    job.error,
                    job.attempts,
                    job.workload,
                    job.workload_size,
                ),
            )
            return str(cursor.lastrowid)

    def list(self, *, function: str | None = None, limit: int | None = None) -> list[FailedJob]:
        query = f"SELECT {self._COLUMNS} FROM failed_jobs"
        args: list[Any] = []
        if function is not None:
            query, args = query + " WHERE function = ?", [function]
        query += " ORDER BY id"
        if limit is not None:
            query, args = query + " LIMIT ?", [*args, limit]
        with self._connect() as db:
            return [self._row(r) for r in db.execute(query, args)]

    def get(self, job_id: str) -> FailedJob:
        with self._connect() as db:
            row = db.execute(f"SELECT {self._COLUMNS} FROM failed_jobs WHERE id = ?", (_int_id(job_id),)).fetchone()
        if row is None:
            raise FailedStoreError(f"no failed job {job_id!r} in {self.path}")
        return self._row(row)

    def delete(self, job_id: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM failed_jobs WHERE id = ?", (_int_id(job_id),)).rowcount > 0

    def purge(self, *, function: str | None = None, older_than: float | None = None) -> int:
        where: list[str] = ["1"]
        args: list[Any] = []
        if function is not None:
            where.append("function = ?")
            args.append(function)
        if older_than is not None:
            where.append("failed_at < ?")
            args.append(time.time() - older_than)
        with self._connect() as db:
            return int(db.execute(f"DELETE FROM failed_jobs WHERE {' AND '.join(where)}", args).rowcount)


def _int_id(job_id: str) -> int:
    try:
        return int(job_id)
    except ValueError:
        raise FailedStoreError(f"{job_id!r} is not a failed job id (a number)") from None


class FolderStore:
    """One ``<id>.json`` file per record; ids sort by time."""

    def __init__(self, path: Path, *, workload_limit: int) -> None:
        self.path = path
        self.workload_limit = workload_limit
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FailedStoreError(f"failed_jobs folder {str(path)!r}: {e}") from e

    def _file(self, job_id: str) -> Path:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise FailedStoreError(f"{job_id!r} is not a failed job id")
        return self.path / f"{job_id}.json"

    def add(self, job: FailedJob) -> str:
        job = _cut(job, self.workload_limit)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(job.failed_at))
        job_id = f"{stamp}-{uuid.uuid4().hex[:8]}"
        data = asdict(replace(job, id=job_id))
        data["workload"] = base64.b64encode(job.workload).decode()
        target = self._file(job_id)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            os.replace(tmp, target)  # readers never see half a record
        except OSError as e:
            raise FailedStoreError(f"failed_jobs folder {str(self.path)!r}: {e}") from e
        return job_id

    def _read(self, file: Path) -> FailedJob:
        try:
            data = json.loads(file.read_text())
            data["workload"] = base64.b64decode(data["workload"])
            return FailedJob(**data)
        except FileNotFoundError:
            raise FailedStoreError(f"no failed job {file.stem!r} in {self.path}") from None
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise FailedStoreError(f"{file}: not a failed job record: {e}") from e

    def list(self, *, function: str | None = None, limit: int | None = None) -> list[FailedJob]:
        jobs = []
        for file in sorted(self.path.glob("[!.]*.json")):
            try:
                job = self._read(file)
            except FailedStoreError:
                continue  # deleted since the glob, or not ours
            if function is None or job.function == function:
                jobs.append(job)
                if limit is not None and len(jobs) >= limit:
                    break
        return jobs

    def get(self, job_id: str) -> FailedJob:
        return self._read(self._file(job_id))

    def delete(self, job_id: str) -> bool:
        try:
            self._file(job_id).unlink()
        except FileNotFoundError:
            return False
        return True

    def purge(self, *, function: str | None = None, older_than: float | None = None) -> int:
        cutoff = time.time() - older_than if older_than is not None else None
        removed = 0
        for job in self.list(function=function):
            if (cutoff is None or job.failed_at < cutoff) and self.delete(job.id):
                removed += 1
        return removed


class RecordFailures(Middleware):
    """The middleware that writes a record of each job that failed for good (the ``failed_jobs`` setting).

    The write (an sqlite insert or a file, a few milliseconds with fsync)
    runs in a thread so the event loop never waits on the disk; a store that
    cannot be written is logged (``failed.record_error``) and the job's
    failure is still reported to gearmand as usual.
    """

    def __init__(self, store: FailedStore, servers: Sequence[str] = ()) -> None:
        self.store = store
        self.servers = list(servers)
        self.pending: set[asyncio.Future[Any]] = set()
        self._client: Any = None

    async def before_final_failure(self, job: JobInfo) -> None:
        """Ask gearmand (GET_STATUS_UNIQUE) how many clients wait for the job, while it still holds it."""
        if not job.unique or not self.servers:
            return
        if self._client is None:
            from .client import Client

            self._client = Client(self.servers)
        server = job.server if job.server in self.servers else None
        status = await self._client.status_unique(job.unique, server=server)
        if status.known:
            job.state["waiting_clients"] = status.waiting

    def after(self, job: JobInfo, result: JobResult) -> None:
        if result.outcome not in FAILED_OUTCOMES:
            return
        if job._state is not None and job._state.get("waiting_clients", 0) > 0:
            log.info(
                "failed.not_recorded",
                function=job.function,
                handle=job.handle_text,
                unique=job.unique_text,
                reason="a client waits for the job and got the failure",
            )
            return
        record = FailedJob(
            job.function,
            job.handle_text,
            job.unique_text,
            result.error or result.outcome,
            result.attempts,
            job.workload,
            len(job.workload),
            job.server,
            time.time(),
        )
        future = asyncio.get_running_loop().run_in_executor(None, self._write, record)
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)

    def _write(self, record: FailedJob) -> None:
        try:
            job_id = self.store.add(record)
        except Exception as e:
            log.error(
                "failed.record_error", function=record.function, handle=record.handle, error=f"{type(e).__name__}: {e}"
            )
            return
        log.info(
            "failed.recorded",
            id=job_id,
            function=record.function,
            handle=record.handle,
            unique=record.unique,
            attempts=record.attempts,
        )

    async def flush(self) -> None:
        """Wait for the records being written (at shutdown); close the status client."""
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
