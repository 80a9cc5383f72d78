"""Processes the benchmark drives: gearmand, the workers under test, the PHP load generators."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PHP_DIR = BENCH / "php"
AIOGEAR_PYTHON = Path(os.environ.get("AIOGEAR_PYTHON", "/tmp/aiogear-venv/bin/python"))
sys.path.insert(0, str(ROOT / "tests"))

from gearmand import Gearmand  # noqa: E402

#: gearmand's I/O threads.  0 (everything on the main thread) measured best on
#: 2 cores: 1.26x the throughput of the default 4, at half the CPU per job.
GEARMAND_THREADS = 0

_GEARWORKER_FLAGS = ["run", "--handlers", str(BENCH / "handlers"), "--log-level", "warning", "--concurrency", "1000"]

#: What each worker kind runs (the servers are appended) and the environment it gets.
WORKERS: dict[str, tuple[list[str], dict[str, str]]] = {
    # What a new user runs: every setting at its default, so one job.done line per job at info,
    # JSON (stderr is not a terminal) into a pipe the bench drains, as journald does under systemd.
    "gearworker-defaults": ([sys.executable, "-m", "gearworker", "run", "--handlers", str(BENCH / "handlers")], {}),
    # The worker before eager start (bench/tasks_first.py): every handler started as a Task. An A/B for latency.
    "gearworker-defaults-tasks": (
        [sys.executable, str(BENCH / "tasks_first.py"), "run", "--handlers", str(BENCH / "handlers")],
        {},
    ),
    # Tuned for the tiny-job flood: no per-job log line, room for all 500 jobs in flight.
    "gearworker": ([sys.executable, "-m", "gearworker", *_GEARWORKER_FLAGS], {}),
    # The defaults with logging at warning: what the job.done line costs, as an A/B (bench.ab).
    "gearworker-defaults-warning": (
        [sys.executable, "-m", "gearworker", "run", "--handlers", str(BENCH / "handlers"), "--log-level", "warning"],
        {},
    ),
    # The defaults with the grab pipeline as deep as it was before (8): the A/B of the default 32.
    "gearworker-defaults-gp8": (
        [sys.executable, "-m", "gearworker", "run", "--handlers", str(BENCH / "handlers")],
        {"GEARWORKER_GRAB_PIPELINE": "8"},
    ),
    # The defaults on Python 3.13 (the CI's second venv, scripts/bootstrap with VENV=.venv-3.13).
    "gearworker-defaults-py313": (
        [str(ROOT / ".venv-3.13/bin/python"), "-m", "gearworker", "run", "--handlers", str(BENCH / "handlers")],
        {},
    ),
    # The defaults from another checkout, for an A/B of a change in one run (say, the commit before it):
    #   git worktree add /tmp/gw-base HEAD~1
    #   BENCH_BASE=/tmp/gw-base python -m bench.reaction --kind gearworker-defaults --kind gearworker-defaults-base
    "gearworker-defaults-base": (
        [
            sys.executable,
            "-c",
            "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
            "runpy.run_module('gearworker', run_name='__main__', alter_sys=True)",
            os.environ.get("BENCH_BASE", "BENCH_BASE is not set"),
            "run",
            "--handlers",
            str(BENCH / "handlers"),
        ],
        {},
    ),
    "php": (["php", str(PHP_DIR / "worker.php")], {}),
    "aiogear": ([str(AIOGEAR_PYTHON), str(BENCH / "aiogear_worker.py")], {}),
}


def fresh_gearmand() -> Gearmand:
    """A new gearmand per case: foreground jobs of timed-out clients linger in an old one."""
    return Gearmand(threads=GEARMAND_THREADS).start()


def worker_command(kind: str, servers: list[str], extra: list[str] | None = None) -> list[str]:
    cmd = list(WORKERS[kind][0])
    if kind.startswith("gearworker"):
        for server in servers:
            cmd += ["--server", server]
    else:
        cmd.append(",".join(servers))
    return cmd + (extra or [])


def start_workers(
    kind: str,
    servers: list[str],
    count: int = 1,
    extra: list[str] | None = None,
) -> list[subprocess.Popen[bytes]]:
    cmd = worker_command(kind, servers, extra)
    env = {**os.environ, "GEARWORKER_STORAGE_ROOTS": "[]", **WORKERS[kind][1]}
    env = {
        k: v
        for k, v in env.items()
        if not k.startswith(("GEARWORKER_", "BENCH_")) or k in WORKERS[kind][1] or k == "GEARWORKER_STORAGE_ROOTS"
    }  # nothing from the caller's environment changes a "defaults" run
    procs = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(count)
    ]
    for p in procs:
        _drain(p)
    return procs


#: The last bytes each worker wrote to stderr (its log), by pid: kept for error messages.
_TAILS: dict[int, bytearray] = {}
#: Bytes of log each worker wrote, by pid.
LOG_BYTES: dict[int, int] = {}
_READERS: dict[int, threading.Thread] = {}


def _drain(proc: subprocess.Popen[bytes]) -> None:
    """Read the worker's stderr as it comes, like journald: a full pipe would stall a worker that logs."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    tail = _TAILS[proc.pid] = bytearray()
    LOG_BYTES[proc.pid] = 0

    def read() -> None:
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                return
            if not data:
                return
            LOG_BYTES[proc.pid] += len(data)
            tail.extend(data)
            del tail[:-4000]

    thread = _READERS[proc.pid] = threading.Thread(target=read, name=f"drain {proc.pid}", daemon=True)
    thread.start()


def log_tail(proc: subprocess.Popen[bytes]) -> str:
    return bytes(_TAILS.get(proc.pid, b"")).decode(errors="replace")


def wait_registered(
    gearmand: Gearmand, function: str, workers: int, procs: list[subprocess.Popen[bytes]], timeout: float = 20.0
) -> None:
    """Wait until gearmand lists ``workers`` connections able to run ``function``."""
    deadline = time.monotonic() + timeout
    while True:
        row = gearmand.status().get(function)
        if row is not None and row[2] >= workers:
            return
        for p in procs:
            if p.poll() is not None:
                time.sleep(0.2)  # the drain thread reads the last words
                raise RuntimeError(f"worker exited with {p.returncode}: {log_tail(p)[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workers} workers for {function} did not register (status: {row})")
        time.sleep(0.05)


def stop(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGKILL) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        reader = _READERS.pop(p.pid, None)
        if reader is not None:
            reader.join(5)  # EOF once the worker is gone; close only then, never under a read
        if p.stderr and (reader is None or not reader.is_alive()):
            p.stderr.close()


@contextlib.contextmanager
def running(
    kind: str, count: int = 1, servers: int = 1, function: str = "echo", extra: list[str] | None = None
) -> Iterator[tuple[list[Gearmand], list[subprocess.Popen[bytes]]]]:
    """Fresh gearmand(s) and ``count`` workers of ``kind``, registered and ready."""
    gearmands = [fresh_gearmand() for _ in range(servers)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = start_workers(kind, [g.address for g in gearmands], count, extra)
        for g in gearmands:
            wait_registered(g, function, count, procs)
        yield gearmands, procs
    finally:
        stop(procs)
        for g in gearmands:
            g.stop()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (children not included)."""
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def rss_bytes(pids: list[int]) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in pids)


def php(script: str, *args: object, timeout: float = 120) -> dict[str, Any]:
    """Run one of bench/php/*.php and return the JSON line it prints."""
    out = subprocess.run(
        ["php", str(PHP_DIR / script), *map(str, args)], capture_output=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{script} failed ({out.returncode}): {out.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result
