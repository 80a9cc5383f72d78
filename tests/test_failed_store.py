"""Failed-job records: both stores keep every field of a record; the CLI lists, shows and purges them.

Each finally-failed background job is recorded durably (function, handle,
unique, workload up to a size limit, error, attempts, time) under the
`failed_jobs` setting (a folder or an sqlite file), and `gearworker failed
list | show ID | retry ID | purge` reads them.  Retry against a real gearmand
is in tests/test_jobqueue_gearmand.py.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, run_gearworker

from gearworker.failed import FailedJob, FailedStoreError, FolderStore, SqliteStore, open_store


def job(function: str = "charge", workload: bytes = b'{"id": 7}', **kw: Any) -> FailedJob:
    base = FailedJob(
        function,
        handle="H:host:1",
        unique="u-7",
        error="ValueError: card declined",
        attempts=3,
        workload=workload,
        workload_size=len(workload),
        server="s:4730",
    )
    return dataclasses.replace(base, **kw)


@pytest.fixture(params=["failed.db", "failed-folder"])
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return tmp_path / "state" / str(request.param)


def test_a_path_ending_in_db_is_sqlite_and_anything_else_a_folder(tmp_path: Path) -> None:
    """The setting's suffix picks the store; both create what is missing."""
    assert isinstance(open_store(tmp_path / "a" / "f.sqlite3"), SqliteStore)
    assert isinstance(open_store(tmp_path / "b" / "failed"), FolderStore)
    assert (tmp_path / "b" / "failed").is_dir()


def test_records_keep_every_field_and_survive_reopening(store_path: Path) -> None:
    """A record read back (by a new store object, as the CLI does) equals what the worker wrote."""
    before = time.time()
    job_id = open_store(store_path).add(job())
    again = open_store(store_path).get(job_id)
    assert again.id == job_id
    assert (again.function, again.handle, again.unique, again.error, again.attempts, again.server) == (
        "charge",
        "H:host:1",
        "u-7",
        "ValueError: card declined",
        3,
        "s:4730",
    )
    assert again.workload == b'{"id": 7}' and not again.truncated
    assert before <= again.failed_at <= time.time()


def test_workloads_over_the_limit_are_cut_and_marked_truncated(store_path: Path) -> None:
    """Only the first workload_limit bytes are kept; the full size is remembered."""
    store = open_store(store_path, workload_limit=4)
    got = store.get(store.add(job(workload=b"\x00\xff" * 10)))
    assert got.workload == b"\x00\xff\x00\xff"
    assert got.workload_size == 20 and got.truncated


def test_list_is_oldest_first_and_filters_by_function(store_path: Path) -> None:
    store = open_store(store_path)
    ids = [store.add(job("a", failed_at=1000.0 + i)) for i in range(3)] + [store.add(job("b", failed_at=2000.0))]
    assert [j.id for j in store.list()] == ids
    assert [j.function for j in store.list(function="b")] == ["b"]
    assert len(store.list(limit=2)) == 2


def test_delete_and_purge_remove_records(store_path: Path) -> None:
    """purge takes a function and an age; delete says whether there was a record."""
    store = open_store(store_path)
    old = store.add(job("a", failed_at=time.time() - 3600))
    store.add(job("a"))
    keep = store.add(job("b"))
    assert store.purge(function="a", older_than=60) == 1
    with pytest.raises(FailedStoreError):
        store.get(old)
    assert store.delete(keep) and not store.delete(keep)
    assert store.purge() == 1
    assert store.list() == []


def test_unknown_ids_are_a_clear_error(store_path: Path) -> None:
    store = open_store(store_path)
    for bad in ("12345", "../etc/passwd", "x"):
        with pytest.raises(FailedStoreError):
            store.get(bad)


def test_several_processes_can_write_one_sqlite_store(tmp_path: Path) -> None:
    """Four processes adding 25 records each at once: 100 records, none lost (sqlite's lock + busy timeout)."""
    path = tmp_path / "f.db"
    open_store(path)
    code = (
        "import sys; from gearworker.failed import open_store, FailedJob\n"
        "s = open_store(sys.argv[1])\n"
        "for i in range(25): s.add(FailedJob('f', 'h', str(i), 'E: x', 1, b'w', 1))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)]) for _ in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    assert len(open_store(path).list()) == 100


def test_cli_lists_shows_and_purges_records_from_the_setting(tmp_path: Path) -> None:
    """`gearworker failed list|show|purge` read the store named by GEARWORKER_FAILED_JOBS."""
    path = tmp_path / "failed.db"
    store = open_store(path)
    first = store.add(job())
    store.add(job("resize", workload=b"\xff\xd8binary", error="OSError: truncated"))
    env = {"GEARWORKER_FAILED_JOBS": str(path)}

    listed = run_gearworker("failed", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "FAILED", "(UTC)"]
    assert "charge" in lines[1] and "ValueError: card declined" in lines[1]
    assert "resize" in lines[2]

    as_json = [
        json.loads(line)
        for line in run_gearworker("failed", "list", "--json", "--function", "charge", env=env).stdout.splitlines()
    ]
    assert [(r["id"], r["attempts"], r["unique"]) for r in as_json] == [(first, 3, "u-7")]

    shown = run_gearworker("failed", "show", first, env=env)
    assert json.loads(shown.stdout)["workload"] == '{"id": 7}'
    raw = subprocess.run(
        [sys.executable, "-m", "gearworker", "failed", "show", "2", "--workload", "--store", str(path)],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert raw.stdout == b"\xff\xd8binary"

    missing = run_gearworker("failed", "show", "999", env=env)
    assert missing.returncode == 1 and "no failed job '999'" in missing.stderr

    purged = run_gearworker("failed", "purge", env=env)
    assert purged.stdout.strip() == "purged 2 records"
    assert store.list() == []


def test_cli_without_a_store_names_the_setting(tmp_path: Path) -> None:
    """No failed_jobs setting and no --store: exit 2 with one line naming failed_jobs."""
    result = run_gearworker("failed", "list")
    assert result.returncode == 2
    assert "failed_jobs" in result.stderr and "Traceback" not in result.stderr


def test_retry_refuses_a_truncated_workload_without_force(tmp_path: Path) -> None:
    """A record that kept only part of its workload would run a different job: refused unless --force."""
    path = tmp_path / "failed"
    job_id = open_store(path, workload_limit=2).add(job(workload=b"abcdef"))
    result = run_gearworker("failed", "retry", job_id, "--store", str(path), "--server", "127.0.0.1:1")
    assert result.returncode == 1 and "--force" in result.stderr
    assert open_store(path).get(job_id).workload == b"ab"


def test_a_folder_store_that_cannot_write_leaves_no_hidden_half_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk (ENOSPC at the fsync): a clear FailedStoreError, and no ``.*.tmp`` file left in the folder."""
    store = open_store(tmp_path / "failed")
    assert isinstance(store, FolderStore)
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(FailedStoreError, match="No space left"):
        store.add(job("a"))
    assert list((tmp_path / "failed").iterdir()) == []
