"""Failed-job records are durable before the failure is reported, written in batches, repeats marked.

No gearmand: a real worker Runner over a transport that records what is
written (as in tests/test_worker_runner.py), and the stores on disk.  The
kill -9 scenario against real processes is in
tests/reliability/test_failure_path.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import uvloop
from gearmand import Gearmand
from test_worker_runner import HANDLERS, RecordingTransport, _connected

from gearworker.failed import FailedJob, FailedStoreError, RecordFailures, open_store
from gearworker.failed.store import BatchWriter, FailedStore, mark_repeats
from gearworker.failed.writer import RecordWriter
from gearworker.logs.jobline import LogMiddleware
from gearworker.protocol import Magic, Packet, PacketType, encode
from gearworker.worker.chain import Chain


def record(unique: str = "u-1", function: str = "charge", failed_at: float = 0.0) -> FailedJob:
    return FailedJob(function, "H:1", unique, "ValueError: no", 1, b"w", 1, "s:4730", failed_at)


class GatedStore:
    """A store whose writes wait for :attr:`gate`; it notes each batch it was given."""

    def __init__(self, inner: FailedStore) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.batches: list[int] = []

    def writer(self) -> BatchWriter:
        inner = self.inner.writer()
        store = self

        class Gated:
            def write(self, jobs: Sequence[FailedJob]) -> list[str]:
                store.gate.wait(10)
                store.batches.append(len(jobs))
                return inner.write(jobs)

            def close(self) -> None:
                inner.close()

        return Gated()

    def add(self, job: FailedJob) -> str:
        return self.inner.add(job)

    def list(self, *, function: str | None = None, limit: int | None = None) -> list[FailedJob]:
        return self.inner.list(function=function, limit=limit)

    def get(self, job_id: str) -> FailedJob:
        return self.inner.get(job_id)

    def delete(self, job_id: str) -> bool:
        return self.inner.delete(job_id)

    def purge(self, *, function: str | None = None, older_than: float | None = None) -> int:
        return self.inner.purge(function=function, older_than=older_than)


@pytest.mark.parametrize("name", ["failed.db", "failed"])
def test_a_failed_jobs_record_is_durable_before_its_work_fail_is_written(tmp_path: Path, name: str) -> None:
    """The WORK_FAIL waits for the record: while the store has not finished writing, nothing is sent; once it
    has, the record is in the store and the WORK_FAIL goes out.  A worker killed in between never reported the
    failure, so gearmand still holds the job and runs it again."""
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "jobs.py").write_text(HANDLERS)
    store = GatedStore(open_store(tmp_path / name))

    async def scenario() -> tuple[list[PacketType], list[PacketType], int]:
        transport = RecordingTransport()
        recorder = RecordFailures(store)
        _worker, session, stream = _connected(tmp_path / "h", transport, Chain([LogMiddleware(), recorder]))
        session.grabs = 1
        stream.data_received(encode(Packet(PacketType.JOB_ASSIGN_UNIQ, (b"H:1", b"fail", b"u-9", b"x"), Magic.RES)))
        await asyncio.sleep(0.3)
        before = transport.sent()
        records_before = len(store.inner.list())
        store.gate.set()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if PacketType.WORK_FAIL in transport.sent():
                break
        await recorder.flush()
        return before, transport.sent(), records_before

    before, after, records_before = uvloop.run(scenario())
    assert PacketType.WORK_FAIL not in before and records_before == 0
    assert PacketType.WORK_FAIL in after
    (saved,) = store.inner.list()
    assert (saved.function, saved.unique, saved.error) == ("fail", "u-9", "ValueError: no")


@pytest.mark.parametrize("name", ["failed.db", "failed"])
def test_records_that_fail_together_are_written_in_one_batch(tmp_path: Path, name: str) -> None:
    """Records queued while the thread writes are taken together: one transaction (or folder fsync) for many."""
    store = GatedStore(open_store(tmp_path / name))

    async def scenario() -> list[str]:
        writer = RecordWriter(store)
        first = writer.write(record("u-0"))
        await asyncio.sleep(0.1)  # the thread holds the first record at the gate
        rest = [writer.write(record(f"u-{i}")) for i in range(1, 200)]
        store.gate.set()
        ids = await asyncio.gather(first, *rest)
        await writer.close()
        return ids

    ids = uvloop.run(scenario())
    assert len(set(ids)) == 200
    assert store.batches == [1, 199]
    assert sorted(j.unique for j in store.inner.list()) == sorted(f"u-{i}" for i in range(200))


def test_a_store_that_cannot_be_written_fails_its_batch_and_the_next_batch_still_works(tmp_path: Path) -> None:
    """The store's error reaches every job of the batch (each logs failed.record_error and still reports its
    failure); the thread goes on with the next batch."""
    folder = tmp_path / "failed"
    store = open_store(folder)

    async def scenario() -> tuple[list[BaseException | str], str]:
        writer = RecordWriter(store)
        folder.rmdir()
        folder.write_text("not a folder")
        failed = list(
            await asyncio.gather(writer.write(record("u-1")), writer.write(record("u-2")), return_exceptions=True)
        )
        folder.unlink()
        folder.mkdir()
        ok = await writer.write(record("u-3"))
        await writer.close()
        return failed, ok

    failed, ok = uvloop.run(scenario())
    assert all(isinstance(e, FailedStoreError) and str(folder) in str(e) for e in failed)
    assert [j.unique for j in store.list()] == ["u-3"] and ok


@pytest.mark.parametrize("name", ["failed.db", "failed"])
def test_a_second_record_of_the_same_job_is_kept_and_shown_as_a_repeat_of_the_first(tmp_path: Path, name: str) -> None:
    """Two records with one function and unique id (a worker killed after its record, before its WORK_FAIL:
    gearmand ran the job again): both kept, the later one marked repeat_of the first.  Other functions, other
    unique ids and records without a unique id are not repeats."""
    store = open_store(tmp_path / name)
    first = store.add(record("u-1", failed_at=1000.0))
    store.add(record("u-1", function="other", failed_at=1001.0))
    store.add(record("", failed_at=1002.0))
    store.add(record("", failed_at=1003.0))
    second = store.add(record("u-1", failed_at=1004.0))
    marks = {j.id: j.repeat_of for j in store.list()}
    assert marks[second] == first and marks[first] == ""
    assert sum(1 for v in marks.values() if v) == 1
    assert store.get(second).repeat_of == first and store.get(second).summary()["repeat_of"] == first


def test_repeats_are_found_in_time_order_whatever_order_the_records_come_in() -> None:
    late = FailedJob("f", "h", "u", "e", 1, b"", 0, "", 2.0, "late")
    early = FailedJob("f", "h", "u", "e", 1, b"", 0, "", 1.0, "early")
    assert [(j.id, j.repeat_of) for j in mark_repeats([late, early])] == [("early", ""), ("late", "early")]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEARWORKER_")}
    return subprocess.run(
        [sys.executable, "-m", "gearworker", "failed", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_retry_submits_the_job_once_and_drops_its_repeats_with_it(gearmand: Gearmand, tmp_path: Path) -> None:
    """`gearworker failed retry ID` on a job recorded twice: one background job queued, both records gone,
    the other job's record kept; `failed list` shows the repeat's first record beforehand."""
    path = tmp_path / "failed.db"
    store = open_store(path)
    first = store.add(record("order-1", failed_at=1.0))
    repeat = store.add(record("order-1", failed_at=2.0))
    other = store.add(record("order-2", failed_at=3.0))
    listed = cli("list", "--store", str(path))
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows[repeat][6] == first and rows[first][6] == "-"  # the REPEAT OF column
    retried = cli("retry", repeat, "--store", str(path), "--server", gearmand.address)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith("H:") and len(retried.stdout.splitlines()) == 1  # the handle, no log line
    assert [j.id for j in store.list()] == [other]
    assert gearmand.status()["charge"][0] == 1
