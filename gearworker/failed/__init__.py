"""Durable records of jobs that failed for good.

A background job has no client waiting for it: without a record its failure
is one log line.  With the ``failed_jobs`` setting the worker writes a record
of every job that failed after its last attempt: function, handle, unique id,
workload (up to ``failed_workload_limit`` bytes), error, attempts, time and
server.  ``gearworker failed list|show|retry|purge`` (:mod:`.cli`) reads them;
``gearworker failed retry ID`` submits one again as a background job.

:mod:`.store` holds the two stores, :mod:`.record` the middleware that writes
the records; :mod:`.query` reads, filters and deletes them for people (pages
newest first by cursor), :mod:`.retry` submits them again, and both serve
:mod:`.cli` (the command line) and the web app's console alike.

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

import os
from pathlib import Path

from .query import FailedQuery
from .query_folder import FolderQuery
from .query_sqlite import SqliteQuery
from .record import RecordFailures
from .store import SQLITE_SUFFIXES, FailedJob, FailedStore, FailedStoreError, FolderStore, SqliteStore, open_store

__all__ = [
    "FailedJob",
    "FailedQuery",
    "FailedStore",
    "FailedStoreError",
    "FolderStore",
    "RecordFailures",
    "SqliteStore",
    "open_query",
    "open_store",
]


def open_query(path: str | os.PathLike[str]) -> FailedQuery:
    """The records at ``path`` (``failed_jobs``): sqlite for ``.db``/``.sqlite``/``.sqlite3``, else a folder.

    A path that does not exist yet is an empty store (nothing has failed): it is
    not created here, so the console never makes folders the workers should own.
    """
    p = Path(path)
    if p.suffix.lower() in SQLITE_SUFFIXES:
        return SqliteQuery(p)
    return FolderQuery(p)
