"""The failed-job records of an sqlite store, for people: pages, filters, deletes (see :mod:`.query`)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog

from .query import Entry, FailedFilter, Page, page_size
from .store import SQLITE_FIRST, SQLITE_TABLE, SQLITE_UNIQUE_INDEX, FailedJob, FailedStoreError

log = structlog.get_logger("gearworker.failed")

__all__ = ["DELETE_BATCH", "SQLITE_INDEXES", "SqliteQuery"]

#: Records deleted per sqlite transaction: a big delete never holds the write lock long (workers wait on it).
DELETE_BATCH = 2000


_ENTRY_COLUMNS = (
    "id, function, handle, unique_id, error, attempts, workload_size, length(workload), server, failed_at, "
    + SQLITE_FIRST
)
_FULL_COLUMNS = "id, failed_at, function, handle, unique_id, server, error, attempts, workload, workload_size"
#: Indexes for the console, created idempotently (CREATE INDEX IF NOT EXISTS) by the first reader.
SQLITE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS failed_jobs_time ON failed_jobs (failed_at)",
    "CREATE INDEX IF NOT EXISTS failed_jobs_function_time ON failed_jobs (function, failed_at)",
    "CREATE INDEX IF NOT EXISTS failed_jobs_handle ON failed_jobs (handle)",  # a job row finding its record
    SQLITE_UNIQUE_INDEX,  # a record's repeats (stores made before it)
)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(filt: FailedFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if filt.function is not None:
        where.append("function = ?")
        args.append(filt.function)
    if filt.handle is not None:
        where.append("handle = ?")
        args.append(filt.handle)
    if filt.since is not None:
        where.append("failed_at >= ?")
        args.append(filt.since)
    if filt.until is not None:
        where.append("failed_at < ?")
        args.append(filt.until)
    if filt.text is not None:
        where.append("(error LIKE ? ESCAPE '\\' OR unique_id LIKE ? ESCAPE '\\')")
        args += [_like(filt.text), _like(filt.text)]
    return where, args


def _sqlite_cursor(entry: Entry) -> str:
    return f"{entry.failed_at!r}/{entry.id}"


def _parse_sqlite_cursor(cursor: str) -> tuple[float, int]:
    try:
        at, _, job_id = cursor.partition("/")
        return float(at), int(job_id)
    except ValueError:
        raise FailedStoreError(f"{cursor!r} is not a page cursor of this store") from None


class SqliteQuery:
    """The records of an sqlite store (see the module docstring)."""

    kind = "sqlite"
    _indexed: set[Path] = set()
    _index_lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            # Nothing has failed yet: an empty table in memory answers every question the same way.
            db = sqlite3.connect(":memory:")
            db.execute(SQLITE_TABLE)
        else:
            db = sqlite3.connect(self.path, timeout=10.0)
            self._ensure_indexes(db)
        try:
            with db:
                yield db
        except sqlite3.Error as e:
            raise FailedStoreError(f"failed_jobs database {str(self.path)!r}: {e}") from e
        finally:
            db.close()

    def _ensure_indexes(self, db: sqlite3.Connection) -> None:
        with self._index_lock:
            if self.path in self._indexed:
                return
            try:
                db.execute(SQLITE_TABLE)
                for statement in SQLITE_INDEXES:
                    db.execute(statement)
                db.commit()
            except sqlite3.Error as e:  # a read-only store still answers, only slower
                log.warning("failed.index_error", path=str(self.path), error=f"{type(e).__name__}: {e}")
            self._indexed.add(self.path)

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> Entry:
        job_id, function, handle, unique, error, attempts, size, kept, server, failed_at, first = row
        repeat_of = str(first) if first is not None and first != job_id else ""
        return Entry(
            str(job_id),
            function,
            handle,
            unique or "",
            error,
            attempts,
            size,
            kept or 0,
            server or "",
            failed_at,
            repeat_of,
        )

    @staticmethod
    def _job(row: tuple[Any, ...]) -> FailedJob:
        job_id, failed_at, function, handle, unique, server, error, attempts, workload, size = row
        return FailedJob(
            function,
            handle,
            unique or "",
            error,
            attempts,
            bytes(workload or b""),
            size,
            server or "",
            failed_at,
            str(job_id),
        )

    def page(
        self,
        filt: FailedFilter,
        *,
        cursor: str | None = None,
        limit: int = 50,
        oldest_first: bool = False,
        total: bool = True,
    ) -> Page:
        limit = page_size(limit)
        if filt.text is not None:
            return self._scanned_page(filt, cursor, limit, oldest_first)
        where, args = _where(filt)
        count_sql = f"SELECT COUNT(*) FROM failed_jobs{_and(where)}"
        count_args = list(args)
        if cursor is not None:
            at, job_id = _parse_sqlite_cursor(cursor)
            where.append("(failed_at, id) > (?, ?)" if oldest_first else "(failed_at, id) < (?, ?)")
            args += [at, job_id]
        order = "ASC" if oldest_first else "DESC"
        sql = f"SELECT {_ENTRY_COLUMNS} FROM failed_jobs{_and(where)} ORDER BY failed_at {order}, id {order} LIMIT ?"
        with self._connect() as db:
            entries = [self._entry(r) for r in db.execute(sql, [*args, limit + 1])] if limit else []
            matching = int(db.execute(count_sql, count_args).fetchone()[0]) if total else -1
        more = len(entries) > limit
        entries = entries[:limit]
        return Page(entries, _sqlite_cursor(entries[-1]) if more else None, matching)

    def _scanned_page(self, filt: FailedFilter, cursor: str | None, limit: int, oldest_first: bool) -> Page:
        """A text filter reads every row the other filters leave, once: in table order, or through the
        function or time index when one narrows them (not in time order through the index, which is half
        as fast).  SQLite counts the matches (a window over all of them, before the cursor narrows them)
        and keeps the page's rows in its sorter, so Python holds one page whatever the number of matches."""
        where, args = _where(filt)
        outer, outer_args = "", []
        if cursor is not None:
            outer = " WHERE (failed_at, id) > (?, ?)" if oldest_first else " WHERE (failed_at, id) < (?, ?)"
            outer_args = list(_parse_sqlite_cursor(cursor))
        order = "ASC" if oldest_first else "DESC"
        sql = (
            f"SELECT id, matching FROM (SELECT failed_at, id, COUNT(*) OVER () AS matching "
            f"FROM failed_jobs{_and(where)}){outer} ORDER BY failed_at {order}, id {order} LIMIT ?"
        )
        with self._connect() as db:
            window = db.execute(sql, [*args, *outer_args, limit + 1]).fetchall()
            if window:
                matching = int(window[0][1])
            else:  # nothing past the cursor: the count needs its own scan
                matching = int(db.execute(f"SELECT COUNT(*) FROM failed_jobs{_and(where)}", args).fetchone()[0])
            ids = [int(job_id) for job_id, _ in window[:limit]]
            by_id = {}
            if ids:
                marks = ",".join("?" * len(ids))
                for row in db.execute(f"SELECT {_ENTRY_COLUMNS} FROM failed_jobs WHERE id IN ({marks})", ids):
                    by_id[row[0]] = self._entry(row)
        entries = [by_id[i] for i in ids if i in by_id]
        more = len(window) > limit
        return Page(entries, _sqlite_cursor(entries[-1]) if more and entries else None, matching)

    def count(self, filt: FailedFilter) -> int:
        where, args = _where(filt)
        with self._connect() as db:
            return int(db.execute(f"SELECT COUNT(*) FROM failed_jobs{_and(where)}", args).fetchone()[0])

    def counts_by_function(self) -> dict[str, int]:
        with self._connect() as db:
            return {
                str(f): int(n) for f, n in db.execute("SELECT function, COUNT(*) FROM failed_jobs GROUP BY function")
            }

    def get(self, job_id: str) -> FailedJob:
        found = self.get_many([job_id])
        if not found:
            raise FailedStoreError(f"no failed job {job_id!r} in {self.path}")
        return found[0]

    def get_many(self, ids: Sequence[str]) -> list[FailedJob]:
        numbers = [_int_id(i) for i in ids]
        by_id: dict[str, FailedJob] = {}
        with self._connect() as db:
            for chunk in _chunks(numbers, 500):
                marks = ",".join("?" * len(chunk))
                for row in db.execute(f"SELECT {_FULL_COLUMNS} FROM failed_jobs WHERE id IN ({marks})", chunk):
                    job = self._job(row)
                    by_id[job.id] = job
        return [by_id[str(n)] for n in numbers if str(n) in by_id]

    def delete(self, ids: Sequence[str]) -> int:
        numbers = [_int_id(i) for i in ids]
        removed = 0
        for chunk in _chunks(numbers, DELETE_BATCH):
            with self._connect() as db:
                marks = ",".join("?" * len(chunk))
                removed += db.execute(f"DELETE FROM failed_jobs WHERE id IN ({marks})", chunk).rowcount
        return removed

    def delete_matching(self, filt: FailedFilter) -> int:
        where, args = _where(filt)
        with self._connect() as db:
            top = db.execute("SELECT MAX(id) FROM failed_jobs").fetchone()[0]
        if top is None:
            return 0
        where.append("id <= ?")
        args.append(top)
        removed = 0
        while True:  # in batches, each its own transaction: workers recording failures never wait long
            with self._connect() as db:
                n = db.execute(
                    f"DELETE FROM failed_jobs WHERE id IN (SELECT id FROM failed_jobs{_and(where)} LIMIT ?)",
                    [*args, DELETE_BATCH],
                ).rowcount
            removed += n
            if n < DELETE_BATCH:
                return removed

    def repeats(self, jobs: Sequence[FailedJob]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        with self._connect() as db:
            for job in jobs:
                if job.unique:
                    rows = db.execute(
                        "SELECT id FROM failed_jobs WHERE function = ? AND unique_id = ? AND id != ?",
                        (job.function, job.unique, _int_id(job.id)),
                    )
                    found[job.id] = [str(r[0]) for r in rows]
        return found


def _and(where: list[str]) -> str:
    return f" WHERE {' AND '.join(where)}" if where else ""


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _int_id(job_id: str) -> int:
    try:
        return int(job_id)
    except ValueError:
        raise FailedStoreError(f"{job_id!r} is not a failed job id (a number)") from None
