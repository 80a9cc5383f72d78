"""Reading failed-job records for people: pages newest first, filters, counts, deletes.

:mod:`.store` is what the worker writes through; this module is what the
command line (``gearworker failed``) and the web app's console read and delete
through, opened from the same ``failed_jobs`` path
(:func:`gearworker.failed.open_query`): the filters, a record's summary, a
page, and the :class:`FailedQuery` protocol that :mod:`.query_sqlite` and
:mod:`.query_folder` implement.

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

import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from .store import FailedJob

__all__ = ["MAX_PAGE", "Entry", "FailedFilter", "FailedQuery", "Page", "fold", "page_size", "parse_time"]

log = structlog.get_logger("gearworker.failed")

#: Most records one page may hold.
MAX_PAGE = 1000
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(text: str) -> str:
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
        needle = fold(self.text) if self.text is not None else None

        def match(e: Entry) -> bool:
            if function is not None and e.function != function:
                return False
            if handle is not None and e.handle != handle:
                return False
            if since is not None and e.failed_at < since:
                return False
            if until is not None and e.failed_at >= until:
                return False
            return needle is None or needle in fold(e.error) or needle in fold(e.unique)

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

    def repeats(self, jobs: Sequence[FailedJob]) -> dict[str, list[str]]:
        """For each of ``jobs`` with a unique id, the ids of the other records of the same job (function and
        unique id) there now, which retrying it retires."""
        ...


def page_size(limit: int) -> int:
    """``limit`` within 0 and :data:`MAX_PAGE`."""
    return max(0, min(MAX_PAGE, int(limit)))
