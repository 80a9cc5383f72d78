"""A plain ``def`` handler without ``cpu=True`` runs in a thread: blocking code that never blocks the loop."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from gearmand import Gearmand
from support import WorkerProcess, handlers_dir, wait_until

from gearworker import Client, JobFailed
from gearworker.client import Progress

THREADS = """
import threading
import time

from gearworker import handler


# Five jobs meet here: they can only if they run at the same time, each in its own thread.
together = threading.Barrier(5, timeout=15)


@handler("blocking")
def blocking(job):
    job.status(1, 2)
    job.send_data(b"partial")
    together.wait()  # blocks its thread, not the worker
    job.status(2, 2)
    return {"thread": threading.current_thread().name, "echo": job.text()}


@handler("boom")
def boom(job):
    raise ValueError("no good")


@handler("stuck", timeout=1)
def stuck(job):
    time.sleep(3600)  # past its timeout; a thread cannot be stopped from outside
"""


async def test_a_plain_def_handler_runs_in_a_thread_with_its_reports_in_order_before_the_result(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    worker = WorkerProcess([gearmand.address], handlers=handlers_dir(tmp_path, threads=THREADS))
    worker.start(wait_for="blocking", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            seen: list[Progress] = []
            results = await asyncio.gather(
                *(client.submit("blocking", f"job {i}", timeout=20, on_progress=seen.append) for i in range(5))
            )
            answers = [r.json() for r in results]
            with_errors = await _failure(client, "boom")
        assert sorted(a["echo"] for a in answers) == [f"job {i}" for i in range(5)]
        assert all(a["thread"].startswith("gearworker handler blocking") for a in answers)
        kinds = [p.kind for p in seen]
        assert kinds.count("status") == 10 and kinds.count("data") == 5
        assert with_errors == "ValueError: no good"
    finally:
        assert worker.stop() == 0


async def test_a_thread_handler_past_its_timeout_fails_and_a_stuck_thread_does_not_hold_the_exit(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    worker = WorkerProcess([gearmand.address], handlers=handlers_dir(tmp_path, threads=THREADS))
    worker.start(wait_for="stuck", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            assert "ran past its 1s timeout" in await _failure(client, "stuck")
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0  # the stuck thread is a daemon thread
    finally:
        worker.stop()


EXITS = """
import sys

from gearworker import handler


class Halt(BaseException):
    pass


@handler("thread_exit")
def thread_exit(job):
    sys.exit("bye from a thread")


@handler("async_interrupt")
async def async_interrupt(job):
    raise KeyboardInterrupt("stop from a coroutine")


@handler("async_halt")
async def async_halt(job):
    raise Halt("neither an Exception nor a cancellation")


@handler("cpu_exit", cpu=True)
def cpu_exit(job):
    sys.exit("bye from a pool process")


@handler("still_here")
async def still_here(job):
    return b"here"
"""


async def test_a_handler_raising_system_exit_or_keyboard_interrupt_fails_its_job_and_the_worker_serves_on(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """SystemExit, KeyboardInterrupt or another BaseException from a handler of any kind fails that one job with
    the usual "Type: message"; the worker neither exits nor leaves the job hanging, and serves the next one."""
    worker = WorkerProcess([gearmand.address], handlers=handlers_dir(tmp_path, exits=EXITS), args=["--processes", "1"])
    worker.start(wait_for="still_here", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            assert await _failure(client, "thread_exit") == "SystemExit: bye from a thread"
            assert await _failure(client, "async_interrupt") == "KeyboardInterrupt: stop from a coroutine"
            assert await _failure(client, "async_halt") == "Halt: neither an Exception nor a cancellation"
            assert await _failure(client, "cpu_exit") == "SystemExit: bye from a pool process"
            assert await client.submit("still_here", b"", timeout=20) == b"here"
        assert worker.poll() is None
    finally:
        assert worker.stop() == 0


OVERRUN = """
import threading
import time

from gearworker import handler

live = 0  # this handler's threads running now
lock = threading.Lock()


@handler("overrun", timeout=1, concurrency=1)
def overrun(job):
    global live
    with lock:
        live += 1
        seen = live
    try:
        time.sleep(float(job.text()))  # past the timeout: the thread runs on after its job failed
        return str(seen)
    finally:
        with lock:
            live -= 1
"""


async def test_a_thread_that_outlives_its_jobs_timeout_keeps_its_place_until_it_returns(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """With ``concurrency=1``, the next job starts only once the timed-out job's thread has returned (it sees
    itself alone), not while that thread still runs; both moments are logged."""
    worker = WorkerProcess([gearmand.address], handlers=handlers_dir(tmp_path, overrun=OVERRUN))
    worker.start(wait_for="overrun", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            assert "ran past its 1s timeout" in await _failure(client, "overrun", b"3")
            assert await client.submit("overrun", b"0", timeout=20) == b"1"
        (left,) = wait_until(lambda: worker.log_records("job.thread_running_on"), process=worker)
        (returned,) = wait_until(lambda: worker.log_records("job.thread_finished"), process=worker)
        assert (left["function"], left["level"], left["threads"]) == ("overrun", "warning", 1)
        assert (returned["function"], returned["handle"], returned["threads"]) == ("overrun", left["handle"], 0)
    finally:
        assert worker.stop() == 0


async def _failure(client: Client, function: str, workload: bytes = b"") -> str:
    try:
        await client.submit(function, workload, timeout=20)
    except JobFailed as e:
        return e.message
    raise AssertionError(f"{function} did not fail")
