"""Where failed-job records live: an sqlite database or a folder of JSON files (see :mod:`gearworker.failed`)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from ..errors import GearworkerError

__all__ = ["FailedJob", "FailedStore", "FailedStoreError", "FolderStore", "SqliteStore", "open_store"]

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


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
