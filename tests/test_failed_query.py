"""Failed-job queries for the console and the CLI: pages newest first by cursor, filters, counts, deletes.

Both stores answer every question the same way (each test runs on sqlite and on a folder).
The 100,000-record timings are a measurement (bench/failed_pages.py, docs/web.md), not a test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from support import run_gearworker

from gearworker.failed import FailedJob, FailedStoreError, open_query, open_store
from gearworker.failed.query import FailedFilter, parse_time
from gearworker.failed.query_folder import FolderQuery
from gearworker.failed.query_sqlite import SqliteQuery
from gearworker.failed.retry import retry_jobs


def record(i: int, function: str = "charge", **kw: Any) -> FailedJob:
    base = FailedJob(
        function,
        handle=f"H:gm:{i}",
        unique=f"order-{i}",
        error=f"ValueError: card declined ({i})",
        attempts=3,
        workload=b'{"id": %d}' % i,
        workload_size=len(b'{"id": %d}' % i),
        server="gm:4730",
        failed_at=1_000_000.0 + i,
    )
    return dataclasses.replace(base, **kw)


@pytest.fixture(params=["failed.db", "failed-folder"])
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return tmp_path / "state" / str(request.param)


def fill(path: Path, n: int, **kw: Any) -> list[str]:
    store = open_store(path)
    return [store.add(record(i, **kw)) for i in range(n)]


def flat(pages: list[list[str]]) -> list[str]:
    return [job_id for page in pages for job_id in page]


def every_page(query: Any, filt: FailedFilter, limit: int, **kw: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = query.page(filt, cursor=cursor, limit=limit, **kw)
        pages.append([e.id for e in page.entries])
        if page.next is None:
            return pages
        cursor = page.next


def test_pages_are_newest_first_and_cover_every_record_once(store_path: Path) -> None:
    ids = fill(store_path, 23)
    query = open_query(store_path)
    pages = every_page(query, FailedFilter(), 10)
    assert [len(p) for p in pages] == [10, 10, 3]
    assert flat(pages) == ids[::-1]
    assert query.page(FailedFilter(), limit=5).total == 23
    assert flat(every_page(query, FailedFilter(), 7, oldest_first=True)) == ids


def test_paging_is_stable_while_new_records_arrive(store_path: Path) -> None:
    """Records written between two pages are newer: they never shift, repeat or hide the next pages."""
    store = open_store(store_path)
    ids = [store.add(record(i)) for i in range(12)]
    query = open_query(store_path)
    first = query.page(FailedFilter(), limit=5)
    for i in range(100, 106):  # a burst of new failures while the operator reads page 1
        store.add(record(i))
    rest = every_page_from(query, first.next, 5)
    assert [e.id for e in first.entries] + rest == ids[::-1]


def every_page_from(query: Any, cursor: str | None, limit: int) -> list[str]:
    out: list[str] = []
    while cursor is not None:
        page = query.page(FailedFilter(), cursor=cursor, limit=limit)
        out += [e.id for e in page.entries]
        cursor = page.next
    return out


def test_filters_by_function_text_time_and_handle_with_their_totals(store_path: Path) -> None:
    store = open_store(store_path)
    store.add(record(1, "charge"))
    store.add(record(2, "resize", error="OSError: disk full"))
    store.add(record(3, "charge", unique="Order-Special_%"))
    store.add(record(4, "resize", error="RuntimeError: CARD service down"))
    query = open_query(store_path)

    def found(**kw: Any) -> tuple[list[str], int]:
        page = query.page(FailedFilter(**kw), limit=50)
        return [e.unique for e in page.entries], page.total

    assert found(function="resize") == (["order-4", "order-2"], 2)
    assert found(text="card") == (["order-4", "Order-Special_%", "order-1"], 3)  # error, any case
    assert found(text="special_%") == (["Order-Special_%"], 1)  # the unique id; % and _ are plain text
    assert found(text="e_%") == ([], 0)
    assert found(since=1_000_002.0, until=1_000_004.0) == (["Order-Special_%", "order-2"], 2)
    assert found(handle="H:gm:3") == (["Order-Special_%"], 1)
    assert found(function="charge", text="declined", until=1_000_002.0) == (["order-1"], 1)
    assert query.count(FailedFilter(text="CARD")) == 3
    assert query.counts_by_function() == {"charge": 2, "resize": 2}


def test_a_text_filter_pages_by_cursor_too(store_path: Path) -> None:
    ids = fill(store_path, 9)
    query = open_query(store_path)
    filt = FailedFilter(text="DECLINED")
    assert flat(every_page(query, filt, 4)) == ids[::-1]
    assert flat(every_page(query, filt, 4, oldest_first=True)) == ids
    assert query.page(filt, limit=4).total == 9


def test_one_record_in_full_and_several_by_id(store_path: Path) -> None:
    ids = fill(store_path, 3)
    query = open_query(store_path)
    job = query.get(ids[1])
    assert (job.function, job.unique, job.workload, job.attempts) == ("charge", "order-1", b'{"id": 1}', 3)
    assert [j.id for j in query.get_many([ids[2], "999", ids[0]])] == [ids[2], ids[0]]
    with pytest.raises(FailedStoreError, match="no failed job"):
        query.get("20990101T000000-deadbeef" if query.kind == "folder" else "999")


def test_delete_a_selection_and_everything_matching_a_filter(store_path: Path) -> None:
    store = open_store(store_path)
    ids = [store.add(record(i, "charge" if i % 2 else "resize")) for i in range(10)]
    query = open_query(store_path)
    assert query.delete([ids[0], ids[1], ids[0]]) == 2
    assert query.delete_matching(FailedFilter(function="charge")) == 4
    assert sorted(e.id for e in query.page(FailedFilter(), limit=50).entries) == sorted(ids[2::2])
    assert query.delete_matching(FailedFilter()) == 4
    assert query.count(FailedFilter()) == 0


def test_a_store_that_does_not_exist_yet_is_empty_and_is_not_created(tmp_path: Path) -> None:
    for path in (tmp_path / "none.db", tmp_path / "none"):
        query = open_query(path)
        page = query.page(FailedFilter(text="x"), limit=10)
        assert (page.entries, page.next, page.total) == ([], None, 0)
        assert query.counts_by_function() == {}
        assert not path.exists()


def test_a_bad_cursor_is_a_clear_error(tmp_path: Path) -> None:
    fill(tmp_path / "f.db", 2)
    with pytest.raises(FailedStoreError, match="cursor"):
        open_query(tmp_path / "f.db").page(FailedFilter(), cursor="not-a-cursor")


def test_sqlite_gets_its_console_indexes_once_and_the_worker_keeps_writing(tmp_path: Path) -> None:
    path = tmp_path / "failed.db"
    fill(path, 3)
    SqliteQuery(path).count(FailedFilter())
    SqliteQuery(path).count(FailedFilter())  # idempotent
    with sqlite3.connect(path) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        plan = " ".join(
            str(r)
            for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM failed_jobs WHERE function = ? AND (failed_at, id) < (?, ?) "
                "ORDER BY failed_at DESC, id DESC LIMIT 51",
                ("charge", 2e6, 5),
            )
        )
    assert {"failed_jobs_time", "failed_jobs_function_time", "failed_jobs_handle"} <= names
    assert "failed_jobs_function_time" in plan and "TEMP B-TREE" not in plan  # an index walk, no sort
    open_store(path).add(record(9))
    assert SqliteQuery(path).count(FailedFilter()) == 4


def test_the_folder_query_sees_records_written_and_deleted_by_others(tmp_path: Path) -> None:
    """One FolderQuery (the web app keeps one) follows the folder: new files are read, removed ones dropped."""
    path = tmp_path / "failed"
    store = open_store(path)
    first = store.add(record(1))
    query = FolderQuery(path)
    assert query.count(FailedFilter(function="charge")) == 1
    second = store.add(record(2))
    assert [e.id for e in query.page(FailedFilter(function="charge")).entries] == [second, first]
    store.delete(first)
    assert [e.id for e in query.page(FailedFilter(function="charge")).entries] == [second]
    (path / "notes.json").write_text("not a record")
    (path / ".tmp-partial.json").write_text("{")
    assert query.count(FailedFilter(text="declined")) == 1
    assert query.counts_by_function() == {"charge": 1}


def test_the_folder_listing_is_reused_while_the_folder_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "failed"
    store = open_store(path)
    ids = [store.add(record(i)) for i in range(3)]
    old = time.time() - 60
    os.utime(path, (old, old))  # settled: no change since long ago
    query = FolderQuery(path)
    assert [e.id for e in query.page(FailedFilter()).entries] == ids[::-1]
    listed = query._cache.names
    query.page(FailedFilter())
    assert query._cache.names is listed  # the same listing: the folder was not read again
    new = store.add(record(9))  # the folder's mtime moves on
    assert query.page(FailedFilter()).entries[0].id == new


def test_times_are_unix_seconds_or_iso_8601() -> None:
    assert parse_time("1767225600") == parse_time("2026-01-01T00:00:00Z") == parse_time("2026-01-01") == 1767225600.0
    assert parse_time("2026-01-01T01:00:00+01:00") == 1767225600.0
    for bad in ("yesterday", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_cli_lists_with_filters_and_purges_what_matches(tmp_path: Path) -> None:
    """`gearworker failed list --grep/--since/--newest` and `purge --grep` run on the console's queries."""
    path = tmp_path / "failed.db"
    store = open_store(path)
    store.add(record(1, error="ValueError: card declined"))
    store.add(record(2, "resize", error="OSError: disk full"))
    store.add(record(3, error="ValueError: card expired"))
    env = {"GEARWORKER_FAILED_JOBS": str(path)}

    def listed(*flags: str) -> list[str]:
        out = run_gearworker("failed", "list", "--json", *flags, env=env)
        assert out.returncode == 0, out.stderr
        return [json.loads(line)["unique"] for line in out.stdout.splitlines()]

    assert listed() == ["order-1", "order-2", "order-3"]
    assert listed("--newest", "--limit", "2") == ["order-3", "order-2"]
    assert listed("--grep", "CARD") == ["order-1", "order-3"]
    assert listed("--since", "1000002", "--until", "1970-01-12T13:46:43Z") == ["order-2"]
    bad = run_gearworker("failed", "list", "--since", "yesterday", env=env)
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr
    purged = run_gearworker("failed", "purge", "--grep", "expired", env=env)
    assert purged.stdout.strip() == "purged 1 record"
    assert listed() == ["order-1", "order-2"]


def test_a_page_without_filters_does_not_wait_for_the_first_read_of_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web app reads a big folder once at start, in a thread; the first page answers meanwhile."""
    import threading

    path = tmp_path / "failed"
    ids = fill(path, 5)
    query = FolderQuery(path)
    started, release = threading.Event(), threading.Event()
    read = FolderQuery._read_entry

    def slow_read(self: FolderQuery, job_id: str) -> Any:
        started.set()
        release.wait(10)
        return read(self, job_id)

    monkeypatch.setattr(FolderQuery, "_read_entry", slow_read)
    warming = threading.Thread(target=query.warm)
    warming.start()
    try:
        assert started.wait(10)
        monkeypatch.setattr(FolderQuery, "_read_entry", read)  # the page reads its own files
        t0 = time.monotonic()
        page = query.page(FailedFilter(), limit=3)
        assert time.monotonic() - t0 < 2 and [e.id for e in page.entries] == ids[::-1][:3]
    finally:
        release.set()
        warming.join(10)
    assert query.count(FailedFilter(function="charge")) == 5


def test_a_folder_text_search_sees_new_and_deleted_records_and_never_joins_two_fields(tmp_path: Path) -> None:
    """The folder's text index is one string of every record: it follows the folder, and a match stays in a field."""
    path = tmp_path / "failed"
    store = open_store(path)
    first = store.add(record(1, error="abc", unique="u1"))
    store.add(record(2, error="xyz", unique="u2"))
    query = FolderQuery(path)
    assert query.count(FailedFilter(text="ABC")) == 1
    for needle in ("abcu1", "u1xyz", "u1\nxyz", "c\0u1"):
        assert query.count(FailedFilter(text=needle)) == 0, needle
    store.add(record(3, error="abc again", unique="u3"))
    assert [e.unique for e in query.page(FailedFilter(text="abc")).entries] == ["u3", "u1"]
    store.delete(first)
    assert query.count(FailedFilter(text="abc")) == 1
    assert query.count(FailedFilter(text="u", function="charge", until=1_000_003.0)) == 1


def test_a_repeat_record_shows_the_first_record_of_its_job_and_is_found_with_it(store_path: Path) -> None:
    """Two records of one job (function and unique id): the later one's repeat_of is the first's id, on
    both stores; repeats() finds the other record of the job, for a retry to retire with it."""
    store = open_store(store_path)
    first = store.add(record(1, unique="order-7"))
    other = store.add(record(2, unique="order-8"))
    again = store.add(record(3, unique="order-7"))
    query = open_query(store_path)
    if isinstance(query, FolderQuery):
        query.warm()  # a folder marks repeats among the records it has read
    marks = {e.id: e.repeat_of for e in query.page(FailedFilter(), limit=10).entries}
    assert marks == {first: "", other: "", again: first}
    assert query.repeats(query.get_many([again])) == {again: [first]}
    assert query.repeats(query.get_many([other])) == {other: []}


class FailingAtOnce:
    """A client whose job fails and is recorded before submit_background returns, as a fast worker's can."""

    def __init__(self, path: Path) -> None:
        self.store = open_store(path)
        self.recorded: list[str] = []

    async def submit_background(self, function: str, workload: bytes, *, unique: str | None = None) -> Any:
        self.recorded.append(self.store.add(record(9, unique=unique or "", function=function)))

        class Handle(bytes):
            server = "127.0.0.1:4730"

        return Handle(b"H:test:1")


async def test_a_retried_job_that_fails_again_before_the_submit_returns_keeps_its_new_record(
    store_path: Path,
) -> None:
    """The record a worker writes for the resubmitted job is not one of the job's earlier repeats: only the
    records there before the retry go with it (a worker on gearmand 2.0.0 can fail the job that fast)."""
    store = open_store(store_path)
    store.add(record(1, unique="order-7"))
    repeat = store.add(record(2, unique="order-7"))
    query = open_query(store_path)
    client = FailingAtOnce(store_path)
    (result,) = await retry_jobs(client, query, query.get_many([repeat]))  # type: ignore[arg-type]
    assert result.ok
    (anew,) = client.recorded
    assert [e.id for e in open_query(store_path).page(FailedFilter(), limit=10).entries] == [anew]


def test_a_text_filter_on_sqlite_holds_one_page_in_python_whatever_the_number_of_matches(tmp_path: Path) -> None:
    """30,000 matching records: the page and its total come from SQLite, not from a list of every
    match's key (which took about 100 bytes a match: 100 MB at a million)."""
    path = tmp_path / "failed.db"
    writer = open_store(path).writer()
    writer.write([record(i) for i in range(30_000)])
    writer.close()
    query = open_query(path)
    tracemalloc.start()
    try:
        first = query.page(FailedFilter(text="DECLINED"), limit=50)
        second = query.page(FailedFilter(text="DECLINED"), cursor=first.next, limit=50)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (first.total, second.total) == (30_000, 30_000)
    assert [e.unique for e in first.entries + second.entries] == [f"order-{i}" for i in range(29_999, 29_899, -1)]
    assert peak < 1_000_000, peak
