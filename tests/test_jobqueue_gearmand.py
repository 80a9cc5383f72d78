"""Job-queue features against a real gearmand and real worker processes.

What users check first: a handler that fails twice then succeeds, with
`retries=2`, gives the client its result; the schedule count on 3 processes;
after editing a handler file and SIGHUP, the same pid serves the new code
while a job that was running completes; `gearworker failed retry` gets a
failed background job done once its handler is fixed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from gearmand import Gearmand
from support import WorkerProcess, handlers_dir, run_gearworker, wait_until

from gearworker import Client
from gearworker.client import Progress
from gearworker.errors import JobFailed

HANDLERS = Path(__file__).resolve().parent / "handlers_jobqueue"


@pytest.fixture
def jobs_worker(gearmand: Gearmand, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A worker serving tests/handlers_jobqueue, with failed-job records in tmp_path/failed.db."""
    state = tmp_path / "state"
    state.mkdir()
    w = WorkerProcess(
        [gearmand.address],
        handlers=HANDLERS,
        args=["--processes", "1"],
        env={"GW_TEST_STATE": str(state), "GEARWORKER_FAILED_JOBS": str(tmp_path / "failed.db")},
    )
    w.start(wait_for="flaky_cpu", gearmand=gearmand)
    yield w
    assert w.stop() == 0


async def run(gearmand: Gearmand, function: str, payload: bytes = b"") -> tuple[bytes | JobFailed, list[str]]:
    warnings: list[str] = []

    def progress(p: Progress) -> None:
        if p.kind == "warning":
            warnings.append(p.data.decode())

    async with Client([gearmand.address]) as client:
        try:
            return await client.submit(function, payload, timeout=60, on_progress=progress), warnings
        except JobFailed as e:
            return e, warnings


# -- retries -----------------------------------------------------------------------


@pytest.mark.parametrize("function", ["flaky", "flaky_cpu"])
async def test_failing_twice_then_succeeding_with_two_retries_gives_the_client_its_result(
    gearmand: Gearmand, jobs_worker: WorkerProcess, function: str
) -> None:
    """retries=2: two WORK_WARNINGs "attempt k/3 failed: Type: message", then the result (async and cpu=True)."""
    result, warnings = await run(gearmand, function)
    prefix = "cpu " if function == "flaky_cpu" else ""
    assert result == f"{prefix}ok after 3 attempts".encode()
    kind = "ValueError" if function == "flaky_cpu" else "RuntimeError"
    assert [w.split(" in ")[0] for w in warnings] == [
        f"attempt 1/3 failed: {kind}: {prefix}flaky failure 1",
        f"attempt 2/3 failed: {kind}: {prefix}flaky failure 2",
    ]
    # logs are written in batches
    wait_until(lambda: jobs_worker.log_records("job.retry"), timeout=30, what="job.retry log lines")


async def test_a_job_failing_more_often_than_its_retries_fails_as_today(
    gearmand: Gearmand, jobs_worker: WorkerProcess, tmp_path: Path
) -> None:
    """The last failure is reported as before (warning with the message, then WORK_FAIL).

    It is recorded too: without a unique id gearmand cannot say whether a client waits.
    """
    result, warnings = await run(gearmand, "never_works")
    assert isinstance(result, JobFailed)
    assert warnings == [
        "attempt 1/2 failed: RuntimeError: broken for good (attempt 1)",
        "RuntimeError: broken for good (attempt 2)",
    ]
    wait_until(lambda: jobs_worker.log_records("failed.recorded"), timeout=30, what="failed-job record")
    with sqlite3.connect(tmp_path / "failed.db") as db:
        rows = db.execute("SELECT function, attempts, error FROM failed_jobs").fetchall()
    assert rows == [("never_works", 2, "RuntimeError: broken for good (attempt 2)")]


async def test_only_jobs_nobody_waits_for_are_recorded(
    gearmand: Gearmand, jobs_worker: WorkerProcess, tmp_path: Path
) -> None:
    """A foreground job whose client waits (asked with GET_STATUS_UNIQUE) is not recorded; a background one is."""
    async with Client([gearmand.address]) as client:
        with pytest.raises(JobFailed):
            await client.submit("never_works", b"fg", unique="fg-1", timeout=60)
        await client.submit_background("never_works", b"bg", unique="bg-1")
    wait_until(lambda: jobs_worker.log_records("failed.recorded"), timeout=30, what="failed-job record")
    assert [e["unique"] for e in jobs_worker.log_records("failed.not_recorded")] == ["fg-1"]
    with sqlite3.connect(tmp_path / "failed.db") as db:
        rows = db.execute("SELECT unique_id, workload, attempts FROM failed_jobs").fetchall()
    assert rows == [("bg-1", b"bg", 2)]


async def test_no_retry_fails_at_the_first_attempt(
    gearmand: Gearmand, jobs_worker: WorkerProcess, tmp_path: Path
) -> None:
    """NoRetry skips the three retries the handler allows."""
    result, warnings = await run(gearmand, "refuses")
    assert isinstance(result, JobFailed)
    assert warnings == ["NoRetry: workload is not valid"]
    assert sorted(p.stat().st_size for p in (tmp_path / "state").iterdir()) == [1]  # one attempt


@pytest.mark.parametrize("function", ["slow_first", "cpu_slow_first"])
async def test_a_timed_out_attempt_is_retried(gearmand: Gearmand, jobs_worker: WorkerProcess, function: str) -> None:
    """Timeouts count as failures: the second attempt answers in time (async and cpu=True)."""
    result, warnings = await run(gearmand, function)
    assert isinstance(result, bytes) and result.endswith(b"second attempt in time")
    assert len(warnings) == 1 and warnings[0].startswith("attempt 1/2 failed: JobTimeout: ")


# -- failed-job records and `gearworker failed retry` ----------------------------------


CHARGE_BROKEN = """
from pathlib import Path
from gearworker import handler

@handler("charge")
async def charge(job):
    raise RuntimeError("payment service URL is wrong")
"""

CHARGE_FIXED = """
import os
from pathlib import Path
from gearworker import handler

@handler("charge")
async def charge(job):
    Path(os.environ["GW_DONE_FILE"]).write_bytes(job.workload)
    return b"charged"
"""


def test_failed_retry_gets_a_failed_background_job_done_once_its_handler_is_fixed(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """Background job fails -> record; fix the handler file, SIGHUP; `gearworker failed retry ID` -> done."""
    handlers = handlers_dir(tmp_path, billing=CHARGE_BROKEN)
    done = tmp_path / "done"
    env = {"GEARWORKER_FAILED_JOBS": str(tmp_path / "failed"), "GW_DONE_FILE": str(done)}
    w = WorkerProcess([gearmand.address], handlers=handlers, env=env).start(wait_for="charge", gearmand=gearmand)
    try:
        submitted = run_gearworker(
            "submit", "-b", "-u", "order-42", "--server", gearmand.address, "charge", '{"order": 42}', env=env
        )
        assert submitted.returncode == 0, submitted.stderr
        wait_until(lambda: w.log_records("failed.recorded"), timeout=30, what="failed-job record")
        listed = run_gearworker("failed", "list", "--json", env=env)
        records = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [(r["function"], r["unique"], r["error"], r["workload_size"]) for r in records] == [
            ("charge", "order-42", "RuntimeError: payment service URL is wrong", 13)
        ]
        assert records[0]["handle"] == submitted.stdout.strip()

        (handlers / "billing.py").write_text(CHARGE_FIXED)
        w.signal(signal.SIGHUP)
        wait_until(lambda: w.log_records("server.reloaded"), timeout=30, what="reload")

        retried = run_gearworker("failed", "retry", records[0]["id"], "--server", gearmand.address, env=env)
        assert retried.returncode == 0, retried.stderr
        wait_until(done.exists, timeout=30, what="the retried job")
        assert done.read_bytes() == b'{"order": 42}'
        assert run_gearworker("failed", "list", "--json", env=env).stdout == ""  # the record is gone
    finally:
        assert w.stop() == 0, w.log_text()[-4000:]


# -- reload --------------------------------------------------------------------------


VERSIONED = """
import asyncio, os
from gearworker import handler

@handler("version")
async def version(job):
    return "{v}"

@handler("hold")
async def hold(job):  # runs until the test creates the file named by the workload
    while not os.path.exists(job.workload.decode()):
        await asyncio.sleep(0.02)
    return "{v} held"

@handler("cpu_version", cpu=True)
def cpu_version(job):
    return "{v} " + str(os.getpid())

@handler("cpu_retried", cpu=True, retries=1, retry_backoff=3)
def cpu_retried(job):
    marker = os.path.join(os.environ["GW_TEST_STATE"], "tried")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return "{v} retried"
"""


async def test_sighup_serves_new_code_from_the_same_pid_while_a_running_job_completes(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """Edit the handler file, SIGHUP: same pid, new code for new jobs (async and pool), the old job finishes."""
    handlers = handlers_dir(tmp_path, versioned=VERSIONED.format(v="v1"))
    w = WorkerProcess([gearmand.address], handlers=handlers, args=["--processes", "1"])
    w.start(wait_for="cpu_version", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            assert await client.submit("version", timeout=30) == b"v1"
            old_pool = (await client.submit("cpu_version", timeout=30)).split()[1]
            release = tmp_path / "release"
            held = asyncio.create_task(client.submit("hold", str(release), timeout=60))
            await asyncio.to_thread(wait_until, lambda: gearmand.status()["hold"][1] == 1, 30, what="hold running")

            (handlers / "versioned.py").write_text(VERSIONED.format(v="v2"))
            w.signal(signal.SIGHUP)
            await asyncio.to_thread(wait_until, lambda: w.log_records("server.reloaded"), 60, what="reload")

            assert await client.submit("version", timeout=30) == b"v2"
            new_cpu = (await client.submit("cpu_version", timeout=30)).split()
            assert new_cpu[0] == b"v2" and new_cpu[1] != old_pool  # pool processes were replaced
            assert not held.done()  # the old job is still running...
            release.touch()
            assert await held == b"v1 held"  # ...and completes on the old code
        assert w.proc is not None and w.proc.poll() is None
        assert [e["pid"] for e in w.log_records("server.reloaded")] == [w.pid]
        await asyncio.to_thread(
            wait_until, lambda: w.log_records("server.old_handlers_retired"), 30, what="old retired"
        )
    finally:
        assert w.stop() == 0, w.log_text()[-4000:]


async def test_a_cpu_job_retrying_across_a_reload_finishes_on_the_old_code(gearmand: Gearmand, tmp_path: Path) -> None:
    """A cpu=True job waiting to retry when SIGHUP comes runs its next attempt on the old code and pool."""
    handlers = handlers_dir(tmp_path, versioned=VERSIONED.format(v="v1"))
    w = WorkerProcess(
        [gearmand.address], handlers=handlers, args=["--processes", "1"], env={"GW_TEST_STATE": str(tmp_path)}
    )
    w.start(wait_for="cpu_retried", gearmand=gearmand)
    try:
        warned = asyncio.Event()
        async with Client([gearmand.address]) as client:
            job = asyncio.create_task(client.submit("cpu_retried", timeout=60, on_progress=lambda p: warned.set()))
            await asyncio.wait_for(warned.wait(), 30)  # "attempt 1/2 failed": the retry waits ~1.5-3 s
            (handlers / "versioned.py").write_text(VERSIONED.format(v="v2"))
            w.signal(signal.SIGHUP)
            assert await job == b"v1 retried"
            # The retry may come before the reload has finished: new jobs get the new code after it.
            await asyncio.to_thread(wait_until, lambda: w.log_records("server.reloaded"), 60, what="reload")
            assert await client.submit("cpu_retried", timeout=30) == b"v2 retried"  # the marker exists now
    finally:
        assert w.stop() == 0, w.log_text()[-4000:]


async def test_sigterm_right_after_a_reload_lets_the_old_handlers_jobs_finish(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """SIGHUP then SIGTERM while an old-code job runs: it completes, the worker exits 0 within the grace period."""
    handlers = handlers_dir(tmp_path, versioned=VERSIONED.format(v="v1"))
    w = WorkerProcess([gearmand.address], handlers=handlers, args=["--processes", "1"])
    w.start(wait_for="hold", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            release = tmp_path / "release"
            held = asyncio.create_task(client.submit("hold", str(release), timeout=60))
            await asyncio.to_thread(wait_until, lambda: gearmand.status()["hold"][1] == 1, 30, what="hold running")
            (handlers / "versioned.py").write_text(VERSIONED.format(v="v2"))
            w.signal(signal.SIGHUP)
            await asyncio.to_thread(wait_until, lambda: w.log_records("server.reloaded"), 60, what="reload")
            w.signal(signal.SIGTERM)
            await asyncio.to_thread(wait_until, lambda: w.log_records("server.draining"), 30, what="draining")
            assert not held.done()  # it outlives SIGTERM, and then completes on the old code
            release.touch()
            assert await held == b"v1 held"
        assert await asyncio.to_thread(w.wait, 60) == 0, w.log_text()[-4000:]
    finally:
        w.stop()


async def test_a_second_signal_cuts_short_the_drain_of_a_reloads_old_handlers(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """SIGHUP, SIGTERM, SIGTERM with an old-code job running and a 60 s grace: the worker logs that it
    drains, exits 0 at the second signal, and the job goes back to the queue."""
    handlers = handlers_dir(tmp_path, versioned=VERSIONED.format(v="v1"))
    w = WorkerProcess([gearmand.address], handlers=handlers, args=["--processes", "1", "--grace-period", "60"])
    w.start(wait_for="hold", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            await client.submit_background("hold", str(tmp_path / "never"))
            await asyncio.to_thread(wait_until, lambda: gearmand.status()["hold"][1] == 1, 30, what="hold running")
            w.signal(signal.SIGHUP)
            await asyncio.to_thread(wait_until, lambda: w.log_records("server.reloaded"), 60, what="reload")
            w.signal(signal.SIGTERM)
            await asyncio.to_thread(wait_until, lambda: w.log_records("server.draining"), 30, what="draining")
            w.signal(signal.SIGTERM)
            assert await asyncio.to_thread(w.wait, 30) == 0, w.log_text()[-4000:]  # not the 60 s grace
        assert w.log_records("server.force_exit")
        await asyncio.to_thread(
            wait_until, lambda: gearmand.status()["hold"][:2] == (1, 0), 30, what="the job queued again"
        )
    finally:
        w.stop()


async def test_a_reload_whose_import_fails_keeps_the_old_handlers(gearmand: Gearmand, tmp_path: Path) -> None:
    """A syntax error in the edited file: logged with the file, the old code keeps serving."""
    handlers = handlers_dir(tmp_path, versioned=VERSIONED.format(v="v1"))
    w = WorkerProcess([gearmand.address], handlers=handlers, args=["--processes", "1"])
    w.start(wait_for="version", gearmand=gearmand)
    try:
        (handlers / "versioned.py").write_text("def broken(:\n")
        w.signal(signal.SIGHUP)
        await asyncio.to_thread(wait_until, lambda: w.log_records("server.reload_failed"), 30, what="reload failure")
        error = str(w.log_records("server.reload_failed")[0]["error"])
        assert "versioned.py" in error and "SyntaxError" in error
        async with Client([gearmand.address]) as client:
            assert await client.submit("version", timeout=30) == b"v1"
            assert (await client.submit("cpu_version", timeout=30)).startswith(b"v1 ")
    finally:
        assert w.stop() == 0, w.log_text()[-4000:]


# -- schedules ---------------------------------------------------------------------


TICK = """
import os
from gearworker import handler

@handler("tick", schedule=1)
async def tick(job):
    with open(os.environ["GW_TICK_FILE"], "a") as f:
        f.write(job.unique.decode() + " " + str(os.getpid()) + "\\n")
"""


def test_three_processes_with_a_one_second_schedule_run_each_of_twenty_ticks_once(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """3 worker processes, schedule=1: the 20 ticks after all are up run 20 times, and no tick ever runs twice."""
    handlers = handlers_dir(tmp_path, ticks=TICK)
    ticks = tmp_path / "ticks"
    ticks.touch()
    workers = [WorkerProcess([gearmand.address], handlers=handlers, env={"GW_TICK_FILE": str(ticks)}) for _ in range(3)]
    try:
        for w in workers:
            w.start()
        workers[0].wait_registered(gearmand, "tick", workers=3)
        # Every scheduler running (registration comes before it starts), then a whole second of margin.
        wait_until(lambda: all(w.log_records("schedule.started") for w in workers), timeout=30)
        first = int(time.time()) + 2
        last = first + 19

        def ran(tick: int) -> bool:
            return any(unique.endswith(f":{tick}") for unique in ticks.read_text().split()[::2])

        wait_until(lambda: ran(last), timeout=60)
        time.sleep(1.0)  # room for a second run of the last tick to show, were there one
    finally:
        for w in workers:
            assert w.stop() == 0, w.log_text()[-4000:]
    lines = ticks.read_text().split()
    runs = Counter(int(unique.rsplit(":", 1)[1]) for unique in lines[::2])
    assert [t for t, n in runs.items() if n > 1] == []  # no tick twice, start-up included
    window = [t for t in runs if first <= t <= last]
    assert sorted(window) == list(range(first, last + 1))  # 20 runs
    submitters = {e["tick"] for w in workers for e in w.log_records("schedule.submitted")}
    assert set(range(first, last + 1)) <= submitters
