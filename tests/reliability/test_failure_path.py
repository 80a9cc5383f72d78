"""The path a job takes when something fails, tried as an operator would: real gearmand and worker processes.

1. Failure records survive a worker killed with SIGKILL: 3 workers share an
   sqlite ``failed_jobs`` store, background jobs with unique ids always fail,
   one worker is killed about a second in; every job ends up recorded.
2. Schedules keep their time while one of two gearmand servers hangs
   (SIGSTOP): no tick missed, none late by more than 5 s, none run twice,
   also after the server resumes.
3. A reload whose handler module takes 3 s to import does not hold up the
   jobs running meanwhile.
4. SIGTERM while a job waits for its retry: the worker hands the job back and
   exits at once, not after the backoff or the grace period.

``--full`` runs the sizes of the scenario as first reported (6,000 jobs, a
90 s hang); the reduced sizes keep each test within about 30 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

from gearmand import Gearmand
from support import MakeGearmand, WorkerProcess, handlers_dir, wait_until

from gearworker import Client

from .conftest import Size
from .harness import record_figures

HANDLERS = Path(__file__).resolve().parents[1] / "handlers_failpath"


# -- 1. failure records and kill -9 --------------------------------------------------


def _recorded(db: Path) -> Counter[str]:
    if not db.exists():
        return Counter()
    with sqlite3.connect(db, timeout=60) as conn:
        try:
            return Counter(u for (u,) in conn.execute("SELECT unique_id FROM failed_jobs"))
        except sqlite3.OperationalError:  # the table is not there yet
            return Counter()


async def test_every_failing_background_job_is_recorded_when_a_worker_is_killed(
    size: Size, gearmand: Gearmand, tmp_path: Path
) -> None:
    """3 workers share an sqlite failed_jobs store; background jobs with unique ids always fail (2,000;
    --full 6,000; $GW_FAILED_JOBS_COUNT to choose); one worker is SIGKILLed about a second in.  Every job ends up
    with a record: a worker commits the record before its WORK_FAIL leaves, so a job whose record is not
    committed is still gearmand's, and runs again."""
    jobs = int(os.environ.get("GW_FAILED_JOBS_COUNT") or (6000 if size.full else 2000))
    db = tmp_path / "failed.db"
    env = {"GEARWORKER_FAILED_JOBS": str(db)}
    workers = [WorkerProcess([gearmand.address], handlers=HANDLERS, env=env) for _ in range(3)]
    try:
        for w in workers:
            w.start()
        workers[0].wait_registered(gearmand, "always_fails", workers=3)
        uniques = [f"fail-{i}" for i in range(jobs)]
        async with Client([gearmand.address]) as client:
            started = time.monotonic()
            submit = asyncio.gather(*(client.submit_background("always_fails", b"x", unique=u) for u in uniques))
            while not _recorded(db):  # the workers are failing jobs...
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)  # ...for about a second
            assert workers[0].proc is not None
            workers[0].proc.kill()
            killed_at = time.monotonic() - started
            recorded_at_kill = sum(_recorded(db).values())
            await submit

        def settled() -> bool:
            queued, running, _ = gearmand.status().get("always_fails", (0, 0, 0))
            return queued == 0 and running == 0

        await asyncio.to_thread(wait_until, settled, 120 if size.full else 60, what="every job failed")
        took = time.monotonic() - started
    finally:
        for w in workers[1:]:
            assert w.stop() == 0, w.log_text()[-3000:]
        workers[0].stop()
    recorded = _recorded(db)
    killed_records = len(workers[0].log_records("failed.recorded"))
    repeats = sum(n - 1 for n in recorded.values())
    record_figures(
        "failure records with a worker killed",
        size=size.label,
        jobs=jobs,
        recorded=len(set(recorded) & set(uniques)),
        repeats=repeats,
        killed_at_s=round(killed_at, 2),
        recorded_at_kill=recorded_at_kill,
        killed_worker_records_logged=killed_records,
        seconds=round(took, 1),
    )
    missing = set(uniques) - set(recorded)
    assert not missing, f"{len(missing)} of {jobs} failed jobs have no record, e.g. {sorted(missing)[:5]}"


# -- 4. shutdown during a retry backoff ---------------------------------------------


async def test_sigterm_hands_back_a_job_waiting_for_its_retry_and_exits_at_once(
    size: Size, gearmand: Gearmand, tmp_path: Path
) -> None:
    """A background job failed its first attempt and waits 30-60 s for its retry (grace period 30 s); SIGTERM:
    the worker hands the job back to gearmand (queued again, for any worker) and exits 0 within 5 s."""
    env = {"GW_RETRY_BACKOFF": "60", "GW_RETRY_MARKER": str(tmp_path / "tried")}
    w = WorkerProcess([gearmand.address], handlers=HANDLERS, env=env, args=["--grace-period", "30"])
    w.start(wait_for="retry_later", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            await client.submit_background("retry_later", b"", unique="waits-for-retry")
        await asyncio.to_thread(wait_until, lambda: w.log_records("job.retry"), 30, what="the first attempt failed")
        assert gearmand.status()["retry_later"][:2] == (1, 1)  # gearmand: running, held by the worker
        sent = time.monotonic()
        w.signal(signal.SIGTERM)
        code = await asyncio.to_thread(w.wait, 60)
        exited = time.monotonic() - sent
    finally:
        w.stop()
    status = gearmand.status()["retry_later"]
    record_figures("shutdown during a retry backoff", size=size.label, exit_s=round(exited, 2), status=list(status))
    assert code == 0, w.log_text()[-3000:]
    assert exited < 5.0, f"exit {exited:.1f}s after SIGTERM"
    assert status[:2] == (1, 0), f"the job is queued again: {status}"
    assert w.log_records("server.stopped")


# -- 3. a reload whose import is slow -----------------------------------------------


SLOW_IMPORT = """
import os
import time

from gearworker import handler

marker = os.environ["GW_SLOW_IMPORT"]
if os.path.exists(marker):
    open(marker + ".started", "w").close()
    time.sleep(3)  # a model loaded, a big module imported
    open(marker + ".done", "w").close()


@handler("slow_module_echo")
async def slow_module_echo(job):
    return job.workload
"""

ECHO = """
from gearworker import handler


@handler("echo")
async def echo(job):
    return job.workload
"""


async def _echo_jobs(address: str, jobs: int, in_flight: int) -> float:
    """Seconds for ``jobs`` foreground echo jobs, ``in_flight`` at a time, from one client."""
    async with Client([address]) as client:
        await client.status_unique("connect", server=address)  # connected (gearmand answers: no worker involved)
        todo = iter(range(jobs))

        async def one_after_another() -> None:
            for i in todo:
                payload = str(i).encode()
                assert await client.submit("echo", payload, timeout=60) == payload

        started = time.monotonic()
        await asyncio.gather(*(one_after_another() for _ in range(in_flight)))
        return time.monotonic() - started


async def test_jobs_run_at_full_speed_while_a_reload_imports_a_slow_module(
    size: Size, gearmand: Gearmand, tmp_path: Path
) -> None:
    """SIGHUP with a handler module that takes 3 s to import: 2,000 echo jobs (50 in flight) run during the
    import take at most 1.5 s more than the same jobs without a reload (the import runs off the event loop),
    and the reload then completes with the new module's function."""
    marker = tmp_path / "slow-now"
    handlers = handlers_dir(tmp_path, echo=ECHO, slow=SLOW_IMPORT)
    w = WorkerProcess([gearmand.address], handlers=handlers, env={"GW_SLOW_IMPORT": str(marker)})
    w.start(wait_for="echo", gearmand=gearmand)
    try:
        await _echo_jobs(gearmand.address, 500, 50)  # warm-up: the first jobs of a process cost more
        quiet = await _echo_jobs(gearmand.address, 2000, 50)
        marker.touch()
        w.signal(signal.SIGHUP)
        started, done = tmp_path / "slow-now.started", tmp_path / "slow-now.done"
        await asyncio.to_thread(wait_until, started.exists, 10, what="the slow import's start", interval=0.01)
        during = await _echo_jobs(gearmand.address, 2000, 50)
        imported_during = not done.exists()  # the jobs ended before the import did
        await asyncio.to_thread(wait_until, lambda: w.log_records("server.reloaded"), 30, what="the reload's end")
        reloaded = w.log_records("server.reloaded")[0]
    finally:
        assert w.stop() == 0, w.log_text()[-3000:]
    record_figures(
        "jobs during a slow reload",
        size=size.label,
        jobs=2000,
        in_flight=50,
        without_reload_s=round(quiet, 3),
        during_import_s=round(during, 3),
        reload_s=reloaded["duration"],
    )
    assert during <= quiet + 1.5, f"2,000 jobs took {during:.2f}s during the import, {quiet:.2f}s without"
    assert imported_during, "the jobs ran while the import was still going on"


# -- 2. schedules while one of two servers hangs --------------------------------------

TICK = """
import os
import time

from gearworker import handler


@handler("tick", schedule=int(os.environ["GW_TICK_EVERY"]))
async def tick(job):
    with open(os.environ["GW_TICK_FILE"], "a") as f:
        f.write(f"{job.unique.decode()} {time.time():.3f} {os.getpid()}\\n")
"""


def _tick_runs(path: Path) -> list[tuple[int, float]]:
    """(tick, seconds late when its handler started) for every run, in order."""
    runs = []
    for line in path.read_text().splitlines():
        unique, at, _ = line.split()
        tick = int(unique.rsplit(":", 1)[1])
        runs.append((tick, float(at) - tick))
    return runs


def test_one_hung_server_of_two_stalls_no_schedule(size: Size, gearmand_factory: MakeGearmand, tmp_path: Path) -> None:
    """2 gearmand, 3 workers with a schedule; one gearmand is SIGSTOPped (12 s; --full: 90 s with schedule=2)
    then resumed.  Every tick from before the hang to after it runs exactly once, none more than 5 s late."""
    every = 2 if size.full else 1
    hang = 90.0 if size.full else 12.0
    servers = [gearmand_factory(), gearmand_factory()]
    ticks = tmp_path / "ticks"
    ticks.touch()
    handlers = handlers_dir(tmp_path, ticks=TICK)
    env = {"GW_TICK_FILE": str(ticks), "GW_TICK_EVERY": str(every)}
    workers = [WorkerProcess([g.address for g in servers], handlers=handlers, env=env) for _ in range(3)]
    hung = servers[0]
    assert hung.proc is not None
    try:
        for w in workers:
            w.start()
        for g in servers:
            workers[0].wait_registered(g, "tick", workers=3)
        wait_until(lambda: all(w.log_records("schedule.started") for w in workers), 30, what="every scheduler")
        time.sleep(2 * every + 1)
        stopped = time.time()
        hung.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(hang)
        finally:
            hung.proc.send_signal(signal.SIGCONT)
        resumed = time.time()
        time.sleep(5 + 2 * every)  # the resumed server hands out whatever it held
        last = time.time() - 3
    finally:
        for w in workers:
            assert w.stop() == 0, w.log_text()[-3000:]
    runs = _tick_runs(ticks)
    window = range((int(stopped) // every - 1) * every, int(last) // every * every + 1, every)
    count = Counter(t for t, _ in runs)
    late = {t: round(lateness, 2) for t, lateness in runs if t in window}
    missed = [t for t in window if count[t] == 0]
    twice = sorted(t for t, n in count.items() if n > 1)
    record_figures(
        "schedules while one of two gearmand hangs",
        size=size.label,
        schedule=every,
        hang_s=hang,
        ticks_in_window=len(window),
        missed=len(missed),
        ran_twice=len(twice),
        max_late_s=max(late.values(), default=0),
        late_over_1s=sum(1 for v in late.values() if v > 1),
        dropped_by_age=sum(len(w.log_records("schedule.tick_dropped")) for w in workers),
        servers_marked_down=sum(len(w.log_records("client.server_down")) for w in workers),
        resumed_after_s=round(resumed - stopped, 1),
    )
    assert not missed, f"ticks never run: {missed}"
    assert not twice, f"ticks run twice: {twice}"
    assert max(late.values()) <= 5.0, f"ticks late by more than 5 s: {[t for t, v in late.items() if v > 5]}"
