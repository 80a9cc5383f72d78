"""gearworker.worker.pool.Pool: reports before results, per-slot timeouts and crashes, cancellation, close(),
big payloads through the slots' mailboxes.

A real pool (forkserver, two single-process slots) runs handlers from a
temporary handlers folder, as the worker's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from itertools import count
from pathlib import Path

import psutil
import pytest

from gearworker import config
from gearworker.worker import mailbox
from gearworker.worker.job import CpuJobSpec
from gearworker.worker.pool import ChildDied, Pool, PoolTimeout, _Channel
from gearworker.worker.registry import Registry, discover

HANDLERS = """
import os, time
from gearworker import handler

@handler("progress", cpu=True)
def progress(job):
    for i in range(1, 31):
        job.status(i, 30)
        job.send_data(str(i))
    job.warning("last")
    return job.workload + b" done"

@handler("pid_then_sleep", cpu=True)
def pid_then_sleep(job):
    job.send_data(str(os.getpid()))
    time.sleep(float(job.workload or b"60"))
    return b"slept"

@handler("pid", cpu=True)
def pid(job):
    return str(os.getpid())

@handler("boom", cpu=True)
def boom(job):
    raise KeyError("no such photo")

@handler("times", cpu=True)
def times(job):
    # "N:payload" -> payload repeated N times
    n, _, payload = job.workload.partition(b":")
    return payload * int(n)

@handler("pid_then_big", cpu=True)
def pid_then_big(job):
    job.send_data(str(os.getpid()))
    time.sleep(60)
    return b"x" * 1_000_000
"""

Report = tuple[str, tuple[bytes, ...]]
_tokens = count(1)


def spec(function: str, workload: bytes = b"") -> CpuJobSpec:
    token = next(_tokens)
    return CpuJobSpec(token, function, f"H:{token}".encode(), b"", workload)


def collect(into: list[Report]) -> Callable[[str, tuple[bytes, ...]], None]:
    def on_report(kind: str, args: tuple[bytes, ...]) -> None:
        into.append((kind, args))

    return on_report


def ignore(kind: str, args: tuple[bytes, ...]) -> None:
    pass


async def first_report(reports: list[Report], timeout: float = 30.0) -> Report:
    """Wait (on the loop) until a report has arrived."""
    async with asyncio.timeout(timeout):
        while not reports:
            await asyncio.sleep(0.01)
    return reports[0]


async def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
            await asyncio.sleep(0.02)
            continue
        return True
    return False


def live_children() -> set[int]:
    """Pids of every live descendant of this test process (zombies excluded)."""
    found = set()
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
    return found


def is_resource_tracker(pid: int) -> bool:
    try:
        return "multiprocessing.resource_tracker" in " ".join(psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    (tmp_path / "pool_unit.py").write_text(HANDLERS)
    return discover(tmp_path)


@pytest.fixture
async def pool(tmp_path: Path, registry: Registry) -> AsyncIterator[Pool]:
    settings = config.load(
        env={},
        overrides={"servers": ["127.0.0.1:1"], "handlers_dir": str(tmp_path), "processes": 2, "log_level": "error"},
    )
    p = Pool(settings)
    await p.start()
    try:
        yield p
    finally:
        await asyncio.wait_for(p.close(), 30)


async def run(
    pool: Pool,
    registry: Registry,
    function: str,
    workload: bytes = b"",
    timeout: float | None = 30,
    on_report: Callable[[str, tuple[bytes, ...]], None] = ignore,
) -> tuple[bool, bytes]:
    return await pool.run(registry.functions[function].func, spec(function, workload), timeout, on_report)


async def test_reports_arrive_in_order_and_all_before_the_result(pool: Pool, registry: Registry) -> None:
    """Every status/data/warning of a job reaches its on_report, in the order sent, before run() returns."""
    reports: list[Report] = []
    ok, result = await run(pool, registry, "progress", b"photo", on_report=collect(reports))
    assert (ok, result) == (True, b"photo done")
    expected: list[Report] = []
    for i in range(1, 31):
        expected += [("status", (str(i).encode(), b"30")), ("data", (str(i).encode(),))]
    expected.append(("warning", (b"last",)))
    assert reports == expected


async def test_each_run_gets_only_its_own_reports(pool: Pool, registry: Registry) -> None:
    """Two jobs running at once in two slots: each on_report sees its own job's reports only."""
    a: list[Report] = []
    b: list[Report] = []
    results = await asyncio.gather(
        run(pool, registry, "progress", b"a", on_report=collect(a)),
        run(pool, registry, "progress", b"b", on_report=collect(b)),
    )
    assert list(results) == [(True, b"a done"), (True, b"b done")]
    assert len(a) == len(b) == 61
    assert a == b  # same handler, same reports, none crossed over or lost


async def test_a_handler_exception_is_a_failed_result_not_an_error(pool: Pool, registry: Registry) -> None:
    """An exception in the handler comes back as (False, "Type: message"); the slot is not replaced."""
    assert await run(pool, registry, "boom") == (False, b"KeyError: 'no such photo'")
    assert pool.restarts == 0
    assert pool.free == 2


async def test_a_timeout_kills_and_replaces_only_that_slot(pool: Pool, registry: Registry) -> None:
    """PoolTimeout kills the late job's process; a job in the other slot runs on to its result."""
    slow_reports: list[Report] = []
    other_reports: list[Report] = []
    other = asyncio.create_task(run(pool, registry, "pid_then_sleep", b"1.5", on_report=collect(other_reports)))
    await first_report(other_reports)
    with pytest.raises(PoolTimeout, match=r"^ran past its 0.3s timeout; its pool process was killed$"):
        await run(pool, registry, "pid_then_sleep", b"60", timeout=0.3, on_report=collect(slow_reports))
    late_pid = int(slow_reports[0][1][0])
    other_pid = int(other_reports[0][1][0])
    assert await gone(late_pid)
    assert psutil.pid_exists(other_pid)
    assert await other == (True, b"slept")  # the other slot's job was not touched
    assert pool.restarts == 1
    assert pool.free == 2 and pool.healthy
    ok, pid = await run(pool, registry, "pid")
    assert ok and int(pid) != late_pid  # the replaced slot runs jobs in a new process


async def test_a_child_killed_from_outside_raises_child_died_and_the_slot_is_rebuilt(
    pool: Pool, registry: Registry
) -> None:
    """SIGKILL of the pool process mid-job (OOM killer): ChildDied says so, and the next job runs."""
    reports: list[Report] = []
    task = asyncio.create_task(run(pool, registry, "pid_then_sleep", b"60", on_report=collect(reports)))
    _, (pid,) = await first_report(reports)
    os.kill(int(pid), signal.SIGKILL)
    with pytest.raises(ChildDied, match=r"^pool process died \(killed by SIGKILL\)$"):
        await task
    assert pool.restarts == 1
    assert pool.free == 2 and pool.healthy
    results = await asyncio.gather(run(pool, registry, "progress", b"x"), run(pool, registry, "progress", b"y"))
    assert list(results) == [(True, b"x done"), (True, b"y done")]


async def test_cancelling_a_run_kills_its_process_and_frees_the_slot(pool: Pool, registry: Registry) -> None:
    """A cancelled run (shutdown, dropped connection) does not leave its job running: the process is killed."""
    reports: list[Report] = []
    task = asyncio.create_task(run(pool, registry, "pid_then_sleep", b"60", on_report=collect(reports)))
    _, (pid,) = await first_report(reports)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(int(pid))
    assert pool.restarts == 1
    assert pool.free == 2
    # Both slots work again, including the one that was cancelled.
    results = await asyncio.gather(run(pool, registry, "pid"), run(pool, registry, "pid"))
    assert all(ok for ok, _ in results)
    assert int(pid) not in {int(p) for _, p in results}


def _blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_big_workloads_and_results_cross_intact_whatever_their_sizes(pool: Pool, registry: Registry) -> None:
    """Payloads from below the mailbox's threshold to several MB, growing and shrinking, in both slots at once.

    Results bigger than the workload that brought them grow the mailbox from
    the pool process's side; each result must be the bytes the handler
    returned, never a stale tail of an earlier, longer one.
    """
    sizes = [100, mailbox.MIN_SIZE - 1, mailbox.MIN_SIZE, 3_000_000, 70_000, 5_000_001, 65_537]
    for seed, size in enumerate(sizes):
        payloads = [_blob(size, seed), _blob(size + 1, seed + 100)]
        results = await asyncio.gather(*(run(pool, registry, "times", b"1:" + p) for p in payloads))
        assert [r == (True, p) for r, p in zip(results, payloads, strict=True)] == [True, True], size
    small = _blob(40_000, 7)  # under the threshold going in, 3 x 40 kB = over it coming back
    assert await run(pool, registry, "times", b"3:" + small) == (True, small * 3)
    big = _blob(2_000_000, 8)
    assert await run(pool, registry, "times", b"0:" + big) == (True, b"")


async def test_a_big_job_after_a_killed_process_runs_in_the_new_process_mailbox(pool: Pool, registry: Registry) -> None:
    """The replaced slot's new process gets a new mailbox: the next big job crosses intact."""
    reports: list[Report] = []
    task = asyncio.create_task(run(pool, registry, "pid_then_big", _blob(1_000_000, 1), on_report=collect(reports)))
    _, (pid,) = await first_report(reports)
    os.kill(int(pid), signal.SIGKILL)
    with pytest.raises(ChildDied):
        await task
    payloads = [_blob(2_500_000, 2), _blob(2_500_000, 3)]
    results = await asyncio.gather(*(run(pool, registry, "times", b"2:" + p) for p in payloads))
    assert list(results) == [(True, p * 2) for p in payloads]


async def test_a_mailbox_that_cannot_grow_leaves_the_workload_to_the_pipe(
    pool: Pool, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of memory for the shared pages (ENOMEM when it grows): the job still runs, its workload pickled."""

    def no_memory(self: mailbox.Mailbox, data: bytes) -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(mailbox.Mailbox, "put", no_memory)  # the worker's side only: the pool process is apart
    payload = _blob(1_000_000, 4)
    assert await run(pool, registry, "times", b"2:" + payload) == (True, payload * 2)


async def test_replacing_slots_leaks_no_file_descriptor(pool: Pool, registry: Registry) -> None:
    """Each replaced slot's mailbox and pipes are closed in the worker: the fd count stays flat."""
    await run(pool, registry, "times", b"1:" + _blob(100_000, 1))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(PoolTimeout):
            await run(pool, registry, "pid_then_sleep", b"60", timeout=0.1)
        assert await run(pool, registry, "times", b"1:" + _blob(100_000, 2)) == (True, _blob(100_000, 2))
    assert pool.restarts == 5
    # The old executors' threads close their ends as they finish: wait for them, up to a limit.
    async with asyncio.timeout(10):
        while len(os.listdir("/proc/self/fd")) > before:
            await asyncio.sleep(0.05)


async def test_close_leaves_no_child_process(tmp_path: Path, registry: Registry) -> None:
    """After close(), even after a slot was replaced, no pool process or forkserver is left (recursively).

    multiprocessing's resource tracker is the one exception, documented in pool.py: it exits with us.
    """
    before = live_children()
    settings = config.load(
        env={},
        overrides={"servers": ["127.0.0.1:1"], "handlers_dir": str(tmp_path), "processes": 2, "log_level": "error"},
    )
    p = Pool(settings)
    await p.start()
    try:
        with pytest.raises(PoolTimeout):
            await run(p, registry, "pid_then_sleep", b"60", timeout=0.2)
        assert await run(p, registry, "pid") != (False, b"")
        assert len(live_children() - before) >= 2  # two pool processes (and the forkserver, unless one ran before)
    finally:
        await asyncio.wait_for(p.close(), 30)
    left = {pid for pid in live_children() - before if not is_resource_tracker(pid)}
    assert left == set(), [psutil.Process(pid).cmdline() for pid in left]


async def test_close_kills_a_process_still_busy_when_its_timeout_runs_out(tmp_path: Path, registry: Registry) -> None:
    """close(timeout=) waits that long for a process busy with a job, then kills it: close() ends, nothing is left."""
    before = live_children()
    settings = config.load(
        env={},
        overrides={"servers": ["127.0.0.1:1"], "handlers_dir": str(tmp_path), "processes": 1, "log_level": "error"},
    )
    p = Pool(settings)
    await p.start()
    reports: list[Report] = []
    job = asyncio.create_task(run(p, registry, "pid_then_sleep", b"60", on_report=collect(reports)))
    busy = int((await first_report(reports))[1][0])
    started = time.monotonic()
    await asyncio.wait_for(p.close(timeout=1), 30)
    took = time.monotonic() - started
    print(f"close(timeout=1) took {took:.2f} s")
    assert took < 10  # 1 s, generously; without the timeout it waits out the 60 s job
    assert await gone(busy)
    job.cancel()
    await asyncio.gather(job, return_exceptions=True)
    left = {pid for pid in live_children() - before if not is_resource_tracker(pid)}
    assert left == set(), [psutil.Process(pid).cmdline() for pid in left]


HANGS_AT_IMPORT = """
import multiprocessing, os, time
from pathlib import Path
from gearworker import handler

if multiprocessing.parent_process() is not None:  # a pool process, not this test's
    Path(MARKERS, str(os.getpid())).write_text("importing")
    time.sleep(3600)


@handler("never_ready", cpu=True)
def never_ready(job):
    return job.workload
"""


async def test_a_start_cancelled_while_a_process_hangs_at_import_kills_its_processes(tmp_path: Path) -> None:
    """start() waits for the pool processes to import the handlers; cancelled while one hangs there (a stop
    signal during start-up), it kills them before it returns, and close() leaves nothing behind."""
    before = live_children()
    handlers, markers = tmp_path / "handlers", tmp_path / "markers"
    handlers.mkdir()
    markers.mkdir()
    # The marker folder written into the module: a forkserver started by an earlier test has an older environment.
    (handlers / "hangs.py").write_text(HANGS_AT_IMPORT.replace("MARKERS", repr(str(markers))))
    settings = config.load(
        env={},
        overrides={"servers": ["127.0.0.1:1"], "handlers_dir": str(handlers), "processes": 2, "log_level": "error"},
    )
    p = Pool(settings)
    start = asyncio.create_task(p.start())
    async with asyncio.timeout(30):
        while len(list(markers.iterdir())) < 2:
            await asyncio.sleep(0.05)
    hung = [int(m.name) for m in markers.iterdir()]
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert [await gone(pid) for pid in hung] == [True, True]
    await asyncio.wait_for(p.close(timeout=5), 30)
    left = {pid for pid in live_children() - before if not is_resource_tracker(pid)}
    assert left == set(), [psutil.Process(pid).cmdline() for pid in left]


def test_a_slot_channel_closed_by_two_threads_at_once_closes_each_descriptor_once() -> None:
    """close() (in its thread, once its timeout killed a busy process) and that job's end (replacing the dead
    process, on the loop) can close one slot's channel at the same time.  Each end is closed once: a second
    close raised EBADF in the closing thread ("Exception in thread pool close", seen in CI) and could close a
    descriptor that was reused meanwhile."""
    closed: list[str] = []

    class SlowEnd:
        def __init__(self, name: str) -> None:
            self.name = name

        def close(self) -> None:
            closed.append(self.name)
            time.sleep(0.2)  # both threads inside close() at once, unless it excludes the second

    channel = _Channel(reader=SlowEnd("reader"), writer=SlowEnd("writer"), mailbox=SlowEnd("mailbox"))  # type: ignore[arg-type]
    threads = [threading.Thread(target=channel.close) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(closed) == ["mailbox", "writer"]
