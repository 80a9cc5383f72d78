"""Reading failed-job records for people: pages newest first, filters, counts, deletes.

:mod:`.store` is what the worker writes through; this module is what the
command line (``gearworker failed``) and the web app's console read and delete
through, opened from the same ``failed_jobs`` path (:func:`open_query`).

- **Order**: newest first by failure time (``failed_at``, then id), or oldest
  first.  Pages are cut by a cursor (keyset paging), never by an offset: a page
  costs the same at record 100,000 as at record 1, and records written while
  someone pages (they are newer) never shift or repeat the pages after it.
- **Filters** (:class:`FailedFilter`): function, text in the error or the
  unique id (case-insensitive for ASCII letters), a time range, a handle.
- **sqlite**: indexes created idempotently on first open, ``(failed_at)``,
  ``(function, failed_at)`` and ``(handle)``: a page is an index walk; a text
  filter reads every row once, in table order, for the page and its total.
- **folder**: file names sort by time (``YYYYmmddTHHMMSS-xxxxxxxx.json``), so a
  page without filters reads the folder listing and the page's files only.
  Any filter needs every record's fields: each file is read once and kept in
  memory (records never change once written), later calls read only the files
  that are new.  See docs/web.md for what that costs at 100,000 files.

Deleting by filter takes a snapshot first (sqlite: the highest id; folder: the
names listed): records written meanwhile are never deleted by it.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import sqlite3
import string
import threading
import time
from base64 import b64decode
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

from .store import SQLITE_FIRST, SQLITE_SUFFIXES, SQLITE_TABLE, SQLITE_UNIQUE_INDEX, FailedJob, FailedStoreError

__all__ = ["Entry", "FailedFilter", "FailedQuery", "FolderQuery", "Page", "SqliteQuery", "open_query", "parse_time"]

log = structlog.get_logger("gearworker.failed")

#: Most records one page may hold.
MAX_PAGE = 1000
#: Records deleted per sqlite transaction: a big delete never holds the write lock long (workers wait on it).
DELETE_BATCH = 2000
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _fold(text: str) -> str:
    """Lower-case ASCII letters only: what sqlite's LIKE ignores, so both stores match the same records."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)  # lower(): 10x faster, same on ASCII


def parse_time(text: str) -> float:
    """A time from a person or a page: Unix seconds (``1767225600``) or ISO 8601 (``2026-01-01T00:00:00Z``;
    without a zone it is UTC).  ValueError for anything else."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        from datetime import UTC, datetime

        stamp = datetime.fromisoformat(text.replace("z", "Z"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return stamp.timestamp()
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a time: {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class FailedFilter:
    """Which records: every field left None matches everything."""

    function: str | None = None
    text: str | None = None  # in the error or the unique id, case-insensitive for ASCII letters
    since: float | None = None  # failed_at >= since (Unix time)
    until: float | None = None  # failed_at < until
    handle: str | None = None  # exactly this job handle

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.function, self.text, self.since, self.until, self.handle))

    def matches(self, e: Entry) -> bool:
        return self.matcher()(e)

    def matcher(self) -> Callable[[Entry], bool]:
        """A predicate for many entries (the folded search text is computed once)."""
        function, handle, since, until = self.function, self.handle, self.since, self.until
        needle = _fold(self.text) if self.text is not None else None

        def match(e: Entry) -> bool:
            if function is not None and e.function != function:
                return False
            if handle is not None and e.handle != handle:
                return False
            if since is not None and e.failed_at < since:
                return False
            if until is not None and e.failed_at >= until:
                return False
            return needle is None or needle in _fold(e.error) or needle in _fold(e.unique)

        return match

    def to_json(self) -> dict[str, Any]:
        """The fields that are set (for logs and answers)."""
        return {
            k: v
            for k, v in (
                ("function", self.function),
                ("q", self.text),
                ("since", self.since),
                ("until", self.until),
                ("handle", self.handle),
            )
            if v is not None
        }


@dataclass(frozen=True, slots=True)
class Entry:
    """One record without its workload: what a list shows and a filter looks at."""

    id: str
    function: str
    handle: str
    unique: str
    error: str
    attempts: int
    workload_size: int  # the full workload's size
    kept: int  # workload bytes kept in the record
    server: str
    failed_at: float
    #: The id of the first record of the same job (function and unique id) when this one repeats it:
    #: gearmand ran the job again after a worker died between its record and its report.
    repeat_of: str = ""

    @property
    def truncated(self) -> bool:
        return self.kept < self.workload_size

    def summary(self) -> dict[str, Any]:
        """JSON-ready; the same keys as :meth:`FailedJob.summary <gearworker.failed.FailedJob.summary>`."""
        return {
            "function": self.function,
            "handle": self.handle,
            "unique": self.unique,
            "error": self.error,
            "attempts": self.attempts,
            "workload_size": self.workload_size,
            "server": self.server,
            "failed_at": self.failed_at,
            "id": self.id,
            "truncated": self.truncated,
            "failed_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.failed_at)),
            "repeat_of": self.repeat_of,
        }

    @classmethod
    def of(cls, job: FailedJob) -> Entry:
        return cls(
            job.id,
            job.function,
            job.handle,
            job.unique,
            job.error,
            job.attempts,
            job.workload_size,
            len(job.workload),
            job.server,
            job.failed_at,
            job.repeat_of,
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of records, the cursor of the next (None at the end) and how many match in all (-1: not counted)."""

    entries: list[Entry]
    next: str | None
    total: int = -1


class FailedQuery(Protocol):
    """What the command line and the console do with a store's records."""

    path: Path
    kind: str  # "sqlite" or "folder"

    def page(
        self,
        filt: FailedFilter,
        *,
        cursor: str | None = None,
        limit: int = 50,
        oldest_first: bool = False,
        total: bool = True,
    ) -> Page:
        """Up to ``limit`` records matching ``filt`` after ``cursor`` (a page's ``next``), newest first by default."""
        ...

    def count(self, filt: FailedFilter) -> int:
        """How many records match."""
        ...

    def counts_by_function(self) -> dict[str, int]:
        """Records per function."""
        ...

    def get(self, job_id: str) -> FailedJob:
        """One record with its workload; :class:`FailedStoreError` when there is none."""
        ...

    def get_many(self, ids: Sequence[str]) -> list[FailedJob]:
        """The records of ``ids`` that exist, in the order given."""
        ...

    def delete(self, ids: Sequence[str]) -> int:
        """Remove these records; return how many there were."""
        ...

    def delete_matching(self, filt: FailedFilter) -> int:
        """Remove every record matching ``filt`` when the call starts (not those written meanwhile)."""
        ...

    def repeats(self, jobs: Sequence[FailedJob]) -> list[str]:
        """The ids of the other records of the same jobs (function and unique id), which retrying them retires."""
        ...


def open_query(path: str | os.PathLike[str]) -> FailedQuery:
    """The records at ``path`` (``failed_jobs``): sqlite for ``.db``/``.sqlite``/``.sqlite3``, else a folder.

    A path that does not exist yet is an empty store (nothing has failed): it is
    not created here, so the console never makes folders the workers should own.
    """
    p = Path(path)
    if p.suffix.lower() in SQLITE_SUFFIXES:
        return SqliteQuery(p)
    return FolderQuery(p)


def _limit(limit: int) -> int:
    return max(0, min(MAX_PAGE, int(limit)))


# -- sqlite ------------------------------------------------------------------------------------------

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
        limit = _limit(limit)
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
        """A text filter reads every row: once, in table order (sequential, twice as fast as in time
        order through the index), keeping the time and id of each match; the page and the total come from that."""
        where, args = _where(filt)
        with self._connect() as db:
            keys: list[tuple[float, int]] = db.execute(
                f"SELECT failed_at, id FROM failed_jobs{_and(where)}", args
            ).fetchall()
            keys.sort()
            if cursor is None:
                start, end = 0, len(keys)
            elif oldest_first:
                start, end = bisect.bisect_right(keys, _parse_sqlite_cursor(cursor)), len(keys)
            else:
                start, end = 0, bisect.bisect_left(keys, _parse_sqlite_cursor(cursor))
            window = keys[start : start + limit + 1] if oldest_first else keys[max(start, end - limit - 1) : end][::-1]
            ids = [job_id for _, job_id in window[:limit]]
            by_id = {}
            if ids:
                marks = ",".join("?" * len(ids))
                for row in db.execute(f"SELECT {_ENTRY_COLUMNS} FROM failed_jobs WHERE id IN ({marks})", ids):
                    by_id[row[0]] = self._entry(row)
        entries = [by_id[i] for i in ids if i in by_id]
        more = len(window) > limit
        return Page(entries, _sqlite_cursor(entries[-1]) if more and entries else None, len(keys))

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

    def repeats(self, jobs: Sequence[FailedJob]) -> list[str]:
        found: list[str] = []
        with self._connect() as db:
            for job in jobs:
                if job.unique:
                    rows = db.execute(
                        "SELECT id FROM failed_jobs WHERE function = ? AND unique_id = ? AND id != ?",
                        (job.function, job.unique, _int_id(job.id)),
                    )
                    found += [str(r[0]) for r in rows]
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


# -- folder ------------------------------------------------------------------------------------------


class _TextIndex:
    """Every record's error and unique id, folded, in one string: a text filter is one C-level search.

    Each record is ``error\\0unique\\n``; ``starts`` are the offsets where each begins.  A
    needle holding neither a NUL nor a line break cannot match across two records.
    """

    __slots__ = ("blob", "ids", "starts")

    def __init__(self, blob: str, starts: list[int], ids: list[str]) -> None:
        self.blob, self.starts, self.ids = blob, starts, ids

    @classmethod
    def of(cls, entries: Iterable[Entry], base: _TextIndex | None = None) -> _TextIndex:
        parts = [] if base is None else [base.blob]
        starts = [] if base is None else list(base.starts)
        ids = [] if base is None else list(base.ids)
        at = 0 if base is None else len(base.blob)
        for e in entries:
            text = f"{_fold(e.error)}\0{_fold(e.unique)}\n"
            parts.append(text)
            starts.append(at)
            ids.append(e.id)
            at += len(text)
        return cls("".join(parts), starts, ids)

    def search(self, needle: str) -> list[str]:
        """The ids whose error or unique id holds ``needle`` (already folded), each once."""
        found: list[str] = []
        blob, starts, ids = self.blob, self.starts, self.ids
        pos = 0
        while (at := blob.find(needle, pos)) >= 0:
            i = bisect.bisect_right(starts, at) - 1
            found.append(ids[i])
            pos = starts[i + 1] if i + 1 < len(starts) else len(blob)
        return found


@dataclass
class _FolderCache:
    """A snapshot: never changed once made (a change makes a new one), so any thread may read it."""

    entries: dict[str, Entry] = field(default_factory=dict)  # the records read, by id
    names: list[str] = field(default_factory=list)  # every record id listed, sorted (= by time)
    by_function: dict[str, list[str]] = field(default_factory=dict)  # the ids read, per function, sorted
    text: _TextIndex | None = None  # built at the first text filter, then extended with new records
    firsts: dict[tuple[str, str], str] | None = None  # the first record of each job (function, unique id)

    def first_records(self) -> dict[tuple[str, str], str]:
        """The first record's id of each job that has a unique id, over the records read (made on first use)."""
        if self.firsts is None:
            firsts: dict[tuple[str, str], str] = {}
            for name in self.names:  # sorted: the first seen is the first recorded
                entry = self.entries.get(name)
                if entry is not None and entry.unique:
                    firsts.setdefault((entry.function, entry.unique), name)
            self.firsts = firsts
        return self.firsts

    def marked(self, entry: Entry) -> Entry:
        """``entry`` with ``repeat_of`` set when an earlier record of the same job was read."""
        if not entry.unique or not self.entries:
            return entry
        first = self.first_records().get((entry.function, entry.unique), entry.id)
        return entry if first == entry.id else replace(entry, repeat_of=first)

    def text_index(self) -> _TextIndex:
        if self.text is None:
            self.text = _TextIndex.of(self.entries.values())  # the same result whichever thread builds it
        return self.text

    def hits(self, filt: FailedFilter) -> list[str]:
        """The ids matching ``filt``, sorted: a text search or a function's own list first, then the other fields."""
        rest = filt
        candidates: list[str] | None = None
        if filt.text is not None and "\n" not in filt.text and "\0" not in filt.text:
            candidates = sorted(self.text_index().search(_fold(filt.text)))
            rest = replace(rest, text=None)
        elif filt.function is not None:
            candidates = self.by_function.get(filt.function, [])
            rest = replace(rest, function=None)
        pool = candidates if candidates is not None else self.names
        if rest.since is not None or rest.until is not None:  # names start with the second they failed in
            lo = bisect.bisect_left(pool, _stamp(rest.since)) if rest.since is not None else 0
            hi = bisect.bisect_right(pool, _stamp(rest.until) + "~") if rest.until is not None else len(pool)
            pool = pool[lo:hi]
        if rest.empty:
            return pool if pool is not self.names else list(pool)
        match, entries = rest.matcher(), self.entries
        return [n for n in pool if (e := entries.get(n)) is not None and match(e)]


def _stamp(at: float) -> str:
    """The start of the file names of records failed in that second (as FolderStore names them)."""
    try:
        return time.strftime("%Y%m%dT%H%M%S", time.gmtime(at))
    except (OverflowError, OSError, ValueError):
        return "" if at < 0 else "~"


def _by_function(entries: dict[str, Entry], names: list[str]) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for name in names:
        entry = entries.get(name)
        if entry is not None:
            index.setdefault(entry.function, []).append(name)
    return index


class FolderQuery:
    """The records of a folder store (see the module docstring).  One instance keeps what it has read."""

    kind = "folder"

    def __init__(self, path: Path, *, listing_ttl: float = 0.0) -> None:
        self.path = path
        #: Seconds a folder listing is reused (the web app: 1 s, so a burst of calls lists once).
        self.listing_ttl = listing_ttl
        self._cache = _FolderCache()
        self._lock = threading.Lock()  # the listing and the snapshot (the web app reads from several threads)
        self._reading = threading.Lock()  # reading records' files
        self._strings: dict[str, str] = {}  # functions and servers repeat: one copy of each
        self._unreadable: set[str] = set()
        self._listed: set[str] = set()  # the file names of the last listing
        self._listed_at = -1e9
        self._mtime: int | None = None  # the folder's mtime at that listing, when settled
        self._synced: list[str] | None = None  # the listing the records read were last checked against

    # -- reading the folder --------------------------------------------------

    def _file(self, job_id: str) -> Path:
        if not job_id or "/" in job_id or "\\" in job_id or job_id.startswith(".") or "\0" in job_id:
            raise FailedStoreError(f"{job_id!r} is not a failed job id")
        return self.path / f"{job_id}.json"

    def _names(self) -> list[str]:
        """Every record id, sorted.

        The folder's mtime changes with every file added or removed: while it has not
        changed (and was old enough to be trusted when last seen) the last listing is
        still right.  Otherwise the folder is listed again and only the difference is
        sorted in (new records sort at the end: a linear merge).
        """
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._listed, self._mtime = set(), None
            return []
        except OSError as e:
            raise FailedStoreError(f"failed_jobs folder {str(self.path)!r}: {e}") from e
        now = time.monotonic()
        if self._mtime == stat.st_mtime_ns or (self.listing_ttl and now - self._listed_at < self.listing_ttl):
            return self._cache.names
        try:
            current = set(os.listdir(self.path))  # plain names: twice as fast as scandir() at 100,000 files
        except OSError as e:
            raise FailedStoreError(f"failed_jobs folder {str(self.path)!r}: {e}") from e
        gone = {n[:-5] for n in self._listed - current if _is_record(n)}
        new = sorted(n[:-5] for n in current - self._listed if _is_record(n))
        names = self._cache.names
        if gone:
            names = [n for n in names if n not in gone]
        if new:
            names = names + new
            names.sort()  # nearly sorted: a linear merge
        # Trust the mtime only once it is over a second old: a change within the same clock
        # tick as the one seen could otherwise leave it unchanged.
        settled = time.time() - stat.st_mtime > 1.0
        self._listed, self._listed_at, self._mtime = current, now, stat.st_mtime_ns if settled else None
        return names

    def _intern(self, text: str) -> str:
        return self._strings.setdefault(text, text)

    def _read_entry(self, job_id: str) -> Entry | None:
        try:
            data = orjson.loads(self._file(job_id).read_bytes())
            workload = data.get("workload", "")
            kept = len(workload) * 3 // 4 - workload[-2:].count("=") if workload else 0
            return Entry(
                job_id,
                self._intern(str(data["function"])),
                str(data.get("handle", "")),
                str(data.get("unique", "")),
                str(data.get("error", "")),
                int(data.get("attempts", 0)),
                int(data.get("workload_size", kept)),
                kept,
                self._intern(str(data.get("server", ""))),
                float(data.get("failed_at", 0.0)),
            )
        except (OSError, ValueError, TypeError, KeyError, FailedStoreError):
            return None  # deleted since the listing, or not a record of ours

    def _read_job(self, job_id: str) -> FailedJob | None:
        try:
            data = orjson.loads(self._file(job_id).read_bytes())
            return FailedJob(
                str(data["function"]),
                str(data.get("handle", "")),
                str(data.get("unique", "")),
                str(data.get("error", "")),
                int(data.get("attempts", 0)),
                b64decode(data.get("workload", "")),
                int(data.get("workload_size", 0)),
                str(data.get("server", "")),
                float(data.get("failed_at", 0.0)),
                job_id,
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise FailedStoreError(f"{self._file(job_id)}: not a failed job record: {e}") from e

    def _refresh(self, *, entries: bool) -> _FolderCache:
        """List the folder; with ``entries``, also read every record not read before (and forget deleted ones).

        Returns a snapshot: its dict and list are replaced, never changed, so other threads
        may read them.  Files are read outside the listing's lock: a page without filters
        never waits for the (long) first read of a big folder.
        """
        with self._lock:
            names = self._names()
            old = self._cache
            self._cache = _FolderCache(old.entries, names, old.by_function, old.text)
            if not entries:
                return self._cache
        with self._reading:  # one thread reads files at a time; the others then find them read
            with self._lock:
                cache = self._cache
            known, names = cache.entries, cache.names
            if names is self._synced:  # the same listing as at the last read: nothing to read
                return cache
            bad = self._unreadable
            fresh = [n for n in names if n not in known and n not in bad]
            listed_bad = sum(1 for n in names if n in bad) if bad else 0
            deleted = len(known) + len(fresh) + listed_bad > len(names)
            if not fresh and not deleted:
                self._synced = names
                return cache
            if deleted:
                alive = set(names)
                grown = {k: v for k, v in known.items() if k in alive}
                self._unreadable = bad = {n for n in bad if n in alive}
            else:
                grown = dict(known)
            added: dict[str, list[str]] = {}
            for name in fresh:
                entry = self._read_entry(name)
                if entry is None:
                    bad.add(name)  # not a record of ours (or deleted meanwhile): not read again
                else:
                    grown[name] = entry
                    added.setdefault(entry.function, []).append(name)
            text: _TextIndex | None = None
            if deleted:
                index = _by_function(grown, names)
            else:  # new records only: each function's list gets them (sorted in: mostly at its end)
                index = dict(cache.by_function)
                for function, ids in added.items():
                    merged = index.get(function, []) + ids
                    merged.sort()
                    index[function] = merged
                if cache.text is not None:
                    text = _TextIndex.of((grown[n] for ids in added.values() for n in ids), cache.text)
            with self._lock:
                self._synced = names
                self._cache = _FolderCache(grown, self._cache.names, index, text)
                return self._cache

    def warm(self) -> int:
        """Read every record now (the web app does it at start, in a thread); return how many there are."""
        return len(self._refresh(entries=True).entries)

    # -- FailedQuery ---------------------------------------------------------

    def page(
        self,
        filt: FailedFilter,
        *,
        cursor: str | None = None,
        limit: int = 50,
        oldest_first: bool = False,
        total: bool = True,
    ) -> Page:
        limit = _limit(limit)
        if filt.empty:
            cache = self._refresh(entries=False)
            names = _past(cache.names, cursor, oldest_first)
            matching = len(cache.names)
            picked: list[Entry] = []
            for name in names:
                entry = cache.entries.get(name) or self._read_entry(name)
                if entry is None:
                    continue  # deleted since the listing
                picked.append(entry)
                if len(picked) > limit:
                    break
        else:
            cache = self._refresh(entries=True)
            hits = cache.hits(filt)
            matching = len(hits)
            picked = []
            for name in _past(hits, cursor, oldest_first):
                entry = cache.entries.get(name)
                if entry is not None:
                    picked.append(entry)
                    if len(picked) > limit:
                        break
        more = len(picked) > limit
        picked = [cache.marked(e) for e in picked[:limit]]
        return Page(picked, picked[-1].id if more and picked else None, matching if total else -1)

    def count(self, filt: FailedFilter) -> int:
        if filt.empty:
            return len(self._refresh(entries=False).names)
        return len(self._refresh(entries=True).hits(filt))

    def counts_by_function(self) -> dict[str, int]:
        return {f: len(ids) for f, ids in self._refresh(entries=True).by_function.items() if ids}

    def get(self, job_id: str) -> FailedJob:
        job = self._read_job(job_id)
        if job is None:
            raise FailedStoreError(f"no failed job {job_id!r} in {self.path}")
        return job

    def get_many(self, ids: Sequence[str]) -> list[FailedJob]:
        found = []
        for job_id in ids:
            try:
                job = self._read_job(job_id)
            except FailedStoreError:
                continue
            if job is not None:
                found.append(job)
        return found

    def delete(self, ids: Sequence[str]) -> int:
        removed = 0
        for job_id in ids:
            try:
                self._file(job_id).unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise FailedStoreError(f"failed_jobs folder {str(self.path)!r}: {e}") from e
            removed += 1
        with self._lock:  # copy, then swap: readers in other threads keep a whole snapshot
            gone = set(ids)
            self._listed = self._listed - {f"{n}.json" for n in gone}
            cache = self._cache
            self._cache = _FolderCache(
                {k: v for k, v in cache.entries.items() if k not in gone},
                [n for n in cache.names if n not in gone],
                {f: [n for n in ids if n not in gone] for f, ids in cache.by_function.items()},
            )
        return removed

    def delete_matching(self, filt: FailedFilter) -> int:
        if filt.empty:
            return self.delete(self._refresh(entries=False).names)
        return self.delete(self._refresh(entries=True).hits(filt))

    def repeats(self, jobs: Sequence[FailedJob]) -> list[str]:
        wanted = {(job.function, job.unique) for job in jobs if job.unique}
        if not wanted:
            return []
        ids = {job.id for job in jobs}
        cache = self._refresh(entries=True)
        return [
            name
            for function, _ in wanted
            for name in cache.by_function.get(function, [])
            if name not in ids and (e := cache.entries.get(name)) is not None and (e.function, e.unique) in wanted
        ]


def _is_record(file_name: str) -> bool:
    return file_name.endswith(".json") and not file_name.startswith(".")


def _past(names: list[str], cursor: str | None, ascending: bool) -> Iterator[str]:
    """The sorted ``names`` past ``cursor``, in page order (descending unless ``ascending``)."""
    if ascending:
        return iter(names[bisect.bisect_right(names, cursor) :] if cursor is not None else names)
    end = bisect.bisect_left(names, cursor) if cursor is not None else len(names)
    return (names[i] for i in range(end - 1, -1, -1))
