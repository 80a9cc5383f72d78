"""The reliability suite's own harness: the results store, process watching, figures (shared helpers: support.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from support import ROOT

HANDLERS = ROOT / "tests" / "handlers_reliability"
FAULTS = ROOT / "tests" / "handlers_test"
ARTIFACT = ROOT / "artifacts" / "reliability.json"

# Figures recorded during this session, printed in the terminal summary.
FIGURES: dict[str, dict[str, Any]] = {}


def seed_from_env() -> int:
    """The random seed of a scenario: $GW_RELIABILITY_SEED to replay one, else a fresh one (printed)."""
    seed = int(os.environ.get("GW_RELIABILITY_SEED") or random.randrange(1 << 30))
    print(f"[reliability] seed {seed} (replay with GW_RELIABILITY_SEED={seed})")
    return seed


def record_figures(name: str, **figures: Any) -> None:
    """Keep ``figures`` for the summary and merge them into artifacts/reliability.json (under their size)."""
    figures["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    FIGURES[name] = figures
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(ARTIFACT.read_text())
    except (OSError, ValueError):
        data = {}
    # Keyed by size, so a CI-size run does not overwrite the figures of the last full run.
    data.setdefault(str(figures.get("size", "any")), {})[name] = figures
    tmp = ARTIFACT.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(ARTIFACT)
    print(f"\n[reliability] {name}: {json.dumps(figures, sort_keys=True)}")


# -- the results store ----------------------------------------------------------


def create_results_db(path: Path) -> Path:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for table in ("runs", "starts"):
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (uniq TEXT NOT NULL, function TEXT NOT NULL, pid INTEGER, t REAL)"
        )
    db.close()
    return path


def runs(path: Path, table: str = "runs") -> Counter[str]:
    """How many times each unique id completed (``runs``) or started (``starts``)."""
    db = sqlite3.connect(path, timeout=60.0)
    try:
        return Counter(u for (u,) in db.execute(f"SELECT uniq FROM {table}"))
    finally:
        db.close()


def wait_for_runs(path: Path, expected: set[str], *, timeout: float, give_up: set[str] | None = None) -> Counter[str]:
    """Poll the store until every id in ``expected`` (minus ``give_up``, if known) ran, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        seen = runs(path)
        if expected - set(seen) - (give_up or set()) == set() or time.monotonic() > deadline:
            return seen
        time.sleep(0.25)


# -- processes ------------------------------------------------------------------


class ProcessWatch:
    """Remembers every descendant any watched process ever had, to prove none outlives the test.

    A thread polls the process trees (every 0.1 s): a pool child that lives
    only between two chaos events is still seen, because pool processes are
    long-lived between recycles.
    """

    def __init__(self) -> None:
        self.roots: dict[int, psutil.Process] = {}
        self.seen: dict[tuple[int, float], psutil.Process] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process watch", daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        with contextlib.suppress(psutil.NoSuchProcess), self._lock:
            p = psutil.Process(pid)
            self.roots[pid] = p
            self.seen[(pid, p.create_time())] = p
        self.poll()

    def poll(self) -> None:
        with self._lock:
            roots = list(self.roots.values())
        for root in roots:
            try:
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess), self._lock:
                    self.seen.setdefault((child.pid, child.create_time()), child)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def leftovers(self, timeout: float = 5.0) -> list[str]:
        """Describe every process seen that is still alive (not a zombie) after ``timeout``."""
        self.close()
        alive = _alive(self.seen.values(), timeout)
        return [f"{p.pid} {' '.join(_cmdline(p))[:200]}" for p in alive]


def _alive(processes: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    procs = [p for p in processes if p.is_running()]
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    still = []
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                still.append(p)
    return still


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return ["?"]


def pool_children(worker_pid: int) -> list[psutil.Process]:
    """The pool processes of a worker: the children of its forkserver."""
    try:
        kids = psutil.Process(worker_pid).children()
    except psutil.NoSuchProcess:
        return []
    out = []
    for kid in kids:
        if any("forkserver" in part for part in _cmdline(kid)):
            with contextlib.suppress(psutil.NoSuchProcess):
                out.extend(kid.children())
    return out


@dataclass
class Sampler:
    """Samples RSS and open fds of a process (and optionally its descendants) every ``interval`` seconds."""

    pid: int
    interval: float = 1.0
    samples: list[dict[str, float]] = field(default_factory=list)
    progress: list[int] = field(default_factory=lambda: [0])  # a counter the test updates

    def __post_init__(self) -> None:
        self._proc = psutil.Process(self.pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def sample(self) -> dict[str, float]:
        children = self._proc.children(recursive=True)
        rss_children = 0
        for c in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                rss_children += c.memory_info().rss
        s = {
            "t": time.monotonic(),
            "done": self.progress[0],
            "rss": self._proc.memory_info().rss,
            "fds": self._proc.num_fds(),
            "children": len(children),
            "rss_children": rss_children,
        }
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(psutil.NoSuchProcess):
                self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.NoSuchProcess):
            self.sample()


# -- submitting -----------------------------------------------------------------


async def submit_background(client: Any, jobs: Sequence[tuple[str, bytes, str]], *, attempts: int = 200) -> int:
    """Queue every (function, workload, unique) job, retrying while no server answers; return the retries.

    A retry after a lost connection may queue a job twice (the first attempt
    may have reached the server): at-least-once, like any Gearman client.
    """
    from gearworker.errors import ConnectionLost, NoServerAvailable

    retries = 0

    async def one(function: str, workload: bytes, unique: str) -> None:
        nonlocal retries
        for attempt in range(attempts):
            try:
                await client.submit_background(function, workload, unique=unique)
                return
            except (ConnectionLost, NoServerAvailable):
                retries += 1
                await asyncio.sleep(min(1.0, 0.05 * (attempt + 1)))
        raise RuntimeError(f"could not submit {unique} after {attempts} attempts")

    await asyncio.gather(*(one(*job) for job in jobs))
    return retries


def mib(n: float) -> float:
    return round(n / (1024 * 1024), 2)


def env_for(db: Path, **extra: str) -> dict[str, str]:
    return {"GW_RESULTS_DB": str(db), **extra}


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
