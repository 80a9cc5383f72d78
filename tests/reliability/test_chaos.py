"""Chaos: jobs keep completing while workers, pool processes and a gearmand are killed.

Three gearmand servers (the first with its persistent sqlite queue), three
gearworker processes, background jobs trickled in over the run.  At random
moments the test SIGKILLs a worker (and starts another), SIGTERMs a worker
(and starts another), restarts the persistent gearmand, and SIGKILLs a pool
process.  At the end every job has run at least once (checked in the results
store the handlers write to), duplicates are counted (at-least-once is the
contract), and no process any worker ever had is left.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from gearmand import Gearmand
from support import WorkerProcess

from gearworker import Client

from .conftest import Size
from .harness import (
    HANDLERS,
    ProcessWatch,
    env_for,
    pool_children,
    record_figures,
    runs,
    seed_from_env,
    submit_background,
    wait_for_runs,
)

GRACE = 5.0
KINDS = ("kill_worker", "term_worker", "restart_gearmand", "kill_pool_child")


def _worker(servers: list[str], db: Path, watch: ProcessWatch) -> WorkerProcess:
    w = WorkerProcess(
        servers,
        handlers=HANDLERS,
        args=["--processes", "2", "--concurrency", "20", "--grace-period", str(GRACE)],
        env=env_for(db, GEARWORKER_RECONNECT_MAX="1"),
    )
    w.start()
    watch.watch(w.pid)
    return w


def _jobs(n: int, rng: random.Random) -> list[tuple[str, bytes, str]]:
    jobs = []
    for i in range(n):
        if rng.random() < 0.3:
            jobs.append(("rec_cpu", str(rng.randint(20, 200)).encode(), f"chaos-{i}"))
        else:
            jobs.append(("rec", str(rng.randint(50, 500)).encode(), f"chaos-{i}"))
    return jobs


class Chaos:
    def __init__(
        self, gearmands: list[Gearmand], workers: list[WorkerProcess], db: Path, watch: ProcessWatch, rng: random.Random
    ) -> None:
        self.gearmands = gearmands
        self.workers = workers
        self.retired: list[WorkerProcess] = []
        self.db = db
        self.watch = watch
        self.rng = rng
        self.events: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.term_exits: list[tuple[int, float]] = []
        self.servers = [g.address for g in gearmands]

    def act(self, kind: str) -> None:
        """Do one chaos event (blocking: run it in a thread)."""
        self.events[kind] += 1
        if kind == "kill_worker":
            victim = self.workers.pop(self.rng.randrange(len(self.workers)))
            victim.signal(signal.SIGKILL)
            self.workers.append(_worker(self.servers, self.db, self.watch))
            victim.wait(10)
            self.retired.append(victim)
        elif kind == "term_worker":
            victim = self.workers.pop(self.rng.randrange(len(self.workers)))
            self.workers.append(_worker(self.servers, self.db, self.watch))
            started = time.monotonic()
            victim.signal(signal.SIGTERM)
            try:
                code = victim.wait(GRACE + 15)
            except subprocess.TimeoutExpired:
                code = -999
            self.term_exits.append((code, time.monotonic() - started))
            self.retired.append(victim)
        elif kind == "restart_gearmand":
            persistent = self.gearmands[0]
            # Half the time an orderly stop, half the time the server dies outright.
            persistent.stop(signal.SIGKILL if self.rng.random() < 0.5 else signal.SIGTERM)
            time.sleep(self.rng.uniform(0.2, 1.5))
            persistent.start()
        elif kind == "kill_pool_child":
            candidates = [c for w in self.workers for c in pool_children(w.pid)]
            if candidates:
                self.rng.choice(candidates).kill()


def _schedule(size: Size, rng: random.Random) -> list[str]:
    """Every kind at least twice, in random order, more rounds at full size."""
    rounds = 5 if size.full else 2
    plan: list[str] = []
    for _ in range(rounds):
        batch = list(KINDS)
        rng.shuffle(batch)
        plan += batch
    return plan


@pytest.mark.timeout(900)
async def test_chaos_every_job_runs_at_least_once_and_no_process_is_left(
    size: Size, results_db: Path, tmp_path: Path
) -> None:
    """Every background job completes at least once through worker kills, SIGTERMs, a gearmand restart and
    pool-process kills; no process outlives its worker."""
    seed = seed_from_env()
    rng = random.Random(seed)
    gearmands = [Gearmand(sqlite=tmp_path / "queue.db").start(), Gearmand().start(), Gearmand().start()]
    watch = ProcessWatch()
    servers = [g.address for g in gearmands]
    workers = [_worker(servers, results_db, watch) for _ in range(3)]
    for w in workers:
        for g in gearmands:
            w.wait_registered(g, "rec_cpu")
    chaos = Chaos(gearmands, workers, results_db, watch, rng)
    jobs = _jobs(size.chaos_jobs, rng)
    expected = {u for _, _, u in jobs}
    plan = _schedule(size, rng)
    submit_seconds = 60.0 if size.full else 15.0
    batches = 40 if size.full else 15
    started = time.monotonic()
    try:
        async with Client(servers, reconnect_min=0.05, reconnect_max=0.5, connect_timeout=2.0) as client:

            async def submitter() -> int:
                retries = 0
                step = len(jobs) // batches + 1
                for i in range(0, len(jobs), step):
                    retries += await submit_background(client, jobs[i : i + step])
                    await asyncio.sleep(submit_seconds / batches)
                return retries

            async def monkey() -> None:
                gap = submit_seconds / (len(plan) + 1)
                for kind in plan:
                    await asyncio.sleep(rng.uniform(0.5, 1.5) * gap)
                    await asyncio.to_thread(chaos.act, kind)

            retries, _ = await asyncio.gather(submitter(), monkey())
        submitted = time.monotonic() - started
        crashed = _crashed(chaos)
        seen = await asyncio.to_thread(_wait_all, results_db, expected, crashed)
        duration = time.monotonic() - started
    finally:
        codes = [w.stop(GRACE + 15) for w in chaos.workers]
        for g in gearmands:
            g.stop()
    leftovers = watch.leftovers()
    crashed = _crashed(chaos)
    missing = expected - set(seen)
    counts = list(seen[u] for u in expected if u in seen)
    starts = runs(results_db, "starts")
    figures = dict(
        size=size.label,
        seed=seed,
        jobs=len(jobs),
        completed=len(expected & set(seen)),
        missing=len(missing),
        lost_to_pool_kill=len(missing & crashed),
        duplicates=sum(c - 1 for c in counts),
        ran_twice_or_more=sum(1 for c in counts if c > 1),
        max_runs=max(counts, default=0),
        started_more_than_once=sum(1 for u in expected if starts[u] > 1),
        duration_s=round(duration, 1),
        submit_phase_s=round(submitted, 1),
        submit_retries=retries,
        events=chaos.events,
        sigterm_exits=[(c, round(d, 2)) for c, d in chaos.term_exits],
        final_exit_codes=codes,
        processes_seen=len(watch.seen),
        leftover_processes=len(leftovers),
    )
    record_figures("chaos", **figures)
    assert not leftovers, leftovers
    assert all(code == 0 and d <= GRACE + 10 for code, d in chaos.term_exits), chaos.term_exits
    assert codes == [0] * len(codes)
    # A job whose pool process is SIGKILLed runs once more in a fresh process;
    # only a second death fails it (ChildDied).  Any other missing job is lost.
    assert missing <= crashed, sorted(missing - crashed)[:20]


def _crashed(chaos: Chaos) -> set[str]:
    out = set()
    for w in chaos.workers + chaos.retired:
        for e in w.log_records("job.done"):
            if e.get("outcome") == "crash":
                out.add(e["unique"])
    return out


def _wait_all(db: Path, expected: set[str], crashed: set[str]) -> Counter[str]:
    return wait_for_runs(db, expected, timeout=180.0, give_up=crashed)
