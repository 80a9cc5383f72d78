"""Where failed-job records live: an sqlite database or a folder of JSON files (see :mod:`gearworker.failed`)."""

from __future__ import annotations

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

from ..errors import GearworkerError

__all__ = [
    "BatchWriter",
    "FailedJob",
    "FailedStore",
    "FailedStoreError",
    "FolderStore",
    "SqliteStore",
    "open_store",
]

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
#: The table of an sqlite store.
SQLITE_TABLE = (
    "CREATE TABLE IF NOT EXISTS failed_jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, failed_at REAL, "
    "function TEXT, handle TEXT, unique_id TEXT, server TEXT, error TEXT, attempts INTEGER, "
    "workload BLOB, workload_size INTEGER)"
)
#: Finds the first record of a job (function and unique id), for the repeats of it.
SQLITE_UNIQUE_INDEX = "CREATE INDEX IF NOT EXISTS failed_jobs_unique ON failed_jobs (function, unique_id)"
#: The id of the first record of the same job as the row's (NULL without a unique id): its repeat_of.
SQLITE_FIRST = (
    "(SELECT MIN(f.id) FROM failed_jobs f WHERE f.function = failed_jobs.function "
    "AND f.unique_id = failed_jobs.unique_id AND failed_jobs.unique_id != '')"
)


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
    #: The id of the first record of the same function and unique id, when this one is a repeat of it
    #: (filled in when records are read; see :func:`mark_repeats`).
    repeat_of: str = ""

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


class BatchWriter(Protocol):
    """Writes records in batches on what it keeps open (a connection, a folder); one thread uses it."""

    def write(self, jobs: Sequence[FailedJob]) -> list[str]:
        """Store ``jobs`` durably (committed, or fsynced) before returning their ids."""
        ...

    def close(self) -> None:
        """Release what it keeps open."""
        ...


class FailedStore(Protocol):
    """Where failed-job records live."""

    def add(self, job: FailedJob) -> str:
        """Store ``job`` (its workload cut to the limit); return its id."""
        ...

    def writer(self) -> BatchWriter:
        """A writer for one thread that writes many records (the worker's; see :mod:`.writer`)."""
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


def mark_repeats(jobs: list[FailedJob]) -> list[FailedJob]:
    """Mark each record whose function and unique id an earlier record has: ``repeat_of`` = the first's id.

    A worker writes a record before it reports the failure, so a worker killed
    between the two leaves the job with gearmand, which runs it again: the
    same job may fail, and be recorded, twice.  Both records are kept (each is
    a run that failed); the later ones are shown as repeats.  Jobs without a
    unique id are never repeats: nothing says two of them are the same job.
    """
    first: dict[tuple[str, str], str] = {}
    out = []
    for job in sorted(jobs, key=lambda j: (j.failed_at, j.id)):
        if job.unique:
            key = (job.function, job.unique)
            earlier = first.setdefault(key, job.id)
            if earlier != job.id:
                job = replace(job, repeat_of=earlier)
        out.append(job)
    return out


def _cut(job: FailedJob, limit: int) -> FailedJob:
    return replace(
        job,
        workload=job.workload[:limit],
        workload_size=max(job.workload_size, len(job.workload)),
        failed_at=job.failed_at or time.time(),
    )


class SqliteStore:
    """Records in one sqlite table.

    Reads and single writes (the command line) open a connection each; the
    worker writes through :meth:`writer`, which keeps one connection and
    commits a batch of records in one transaction.
    """

    def __init__(self, path: Path, *, workload_limit: int) -> None:
        self.path = path
        self.workload_limit = workload_limit
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")  # readers (the CLI) never block the writing worker
                db.execute(SQLITE_TABLE)
                db.execute(SQLITE_UNIQUE_INDEX)
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
        with self._connect() as db:
            return _insert(db, [_cut(job, self.workload_limit)])[0]

    def writer(self) -> BatchWriter:
        return _SqliteWriter(self)

    _FIRST = SQLITE_FIRST

    def _marked(self, row: tuple[Any, ...]) -> FailedJob:
        job = self._row(row[:-1])
        first = row[-1]
        return replace(job, repeat_of=str(first)) if first is not None and str(first) != job.id else job

    def list(self, *, function: str | None = None, limit: int | None = None) -> list[FailedJob]:
        query = f"SELECT {self._COLUMNS}, {self._FIRST} FROM failed_jobs"
        args: list[Any] = []
        if function is not None:
            query, args = query + " WHERE function = ?", [function]
        query += " ORDER BY id"
        if limit is not None:
            query, args = query + " LIMIT ?", [*args, limit]
        with self._connect() as db:
            return [self._marked(r) for r in db.execute(query, args)]

    def get(self, job_id: str) -> FailedJob:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {self._COLUMNS}, {self._FIRST} FROM failed_jobs WHERE id = ?", (_int_id(job_id),)
            ).fetchone()
        if row is None:
            raise FailedStoreError(f"no failed job {job_id!r} in {self.path}")
        return self._marked(row)

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


def _insert(db: sqlite3.Connection, jobs: Sequence[FailedJob]) -> list[str]:
    ids = []
    for job in jobs:
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
        ids.append(str(cursor.lastrowid))
    return ids


class _SqliteWriter:
    """One connection, kept; each batch is one transaction, committed with an fsync (synchronous=FULL).

    A connection per record, committed alone, makes 500-900 records/s across 3
    processes sharing one file; batched on a kept connection, 22,800-26,200
    (bench/failed_store.py).
    """

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit; BEGIN IMMEDIATE takes the write lock
        # first, so a busy database waits in the busy handler (10 s) instead of failing mid-way.
        db = sqlite3.connect(self.store.path, timeout=10.0, isolation_level=None)
        db.execute("PRAGMA synchronous = FULL")  # a committed record survives power loss, not just a kill
        return db

    def write(self, jobs: Sequence[FailedJob]) -> list[str]:
        limit = self.store.workload_limit
        try:
            if self._db is None:
                self._db = self._open()
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                ids = _insert(db, [_cut(job, limit) for job in jobs])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return ids
        except sqlite3.Error as e:
            self.close()  # a fresh connection for the next batch
            raise FailedStoreError(f"failed_jobs database {str(self.store.path)!r}: {e}") from e

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


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
        return self.writer().write([job])[0]

    def writer(self) -> BatchWriter:
        return _FolderWriter(self)

    def _prepare(self, job: FailedJob) -> tuple[str, bytes]:
        """A new record's id and its file's bytes."""
        job = _cut(job, self.workload_limit)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(job.failed_at))
        job_id = f"{stamp}-{uuid.uuid4().hex[:8]}"
        data = asdict(replace(job, id=job_id))
        del data["repeat_of"]  # found when read, never stored
        data["workload"] = base64.b64encode(job.workload).decode()
        return job_id, (json.dumps(data, indent=1) + "\n").encode()

    def _read(self, file: Path) -> FailedJob:
        try:
            data = json.loads(file.read_text())
            data["workload"] = base64.b64decode(data["workload"])
            data.pop("repeat_of", None)
            return FailedJob(**data)
        except FileNotFoundError:
            raise FailedStoreError(f"no failed job {file.stem!r} in {self.path}") from None
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise FailedStoreError(f"{file}: not a failed job record: {e}") from e

    def _all(self) -> list[FailedJob]:
        jobs = []
        for file in self.path.glob("[!.]*.json"):
            try:
                jobs.append(self._read(file))
            except FailedStoreError:
                continue  # deleted since the glob, or not ours
        return mark_repeats(jobs)  # oldest first

    def list(self, *, function: str | None = None, limit: int | None = None) -> list[FailedJob]:
        jobs = [job for job in self._all() if function is None or job.function == function]
        return jobs if limit is None else jobs[:limit]

    def get(self, job_id: str) -> FailedJob:
        job = self._read(self._file(job_id))
        if not job.unique:
            return job
        return next((j for j in self._all() if j.id == job.id), job)  # with repeat_of (a scan: the CLI's)

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


class _FolderWriter:
    """Each record's file written and fsynced, renamed into place; then the folder fsynced once per batch.

    (Writing a batch's files first and fsyncing them after measured slower here,
    and stalled the writing process's event loop for up to 155 ms.)
    """

    def __init__(self, store: FolderStore) -> None:
        self.store = store

    def write(self, jobs: Sequence[FailedJob]) -> list[str]:
        store = self.store
        ids = []
        try:
            for job in jobs:
                job_id, data = store._prepare(job)
                target = store._file(job_id)
                tmp = target.with_name(f".{target.name}.tmp")
                try:
                    with open(tmp, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, target)  # readers never see half a record
                except OSError:
                    tmp.unlink(missing_ok=True)  # a full disk must not also leave hidden half-records
                    raise
                ids.append(job_id)
            fd = os.open(store.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)  # the renames: a record is there after a crash, not just its data
            finally:
                os.close(fd)
        except OSError as e:
            raise FailedStoreError(f"failed_jobs folder {str(store.path)!r}: {e}") from e
        return ids

    def close(self) -> None:
        pass
