"""CPU cost of the per-job ``job.done`` log line alone, the way the worker logs it.

    .venv/bin/python -m bench.logcost              # this logging set-up beside the previous one
    .venv/bin/python -m bench.logcost --lines 50000

"worker" is the line as the worker writes it: the Runner notes each completed
job (its monotonic and wall-clock end) and renders the lines in batches of up
to 128, or 20 ms, with ``LogMiddleware.completed_many``.  The other set-ups
are one ``log.info("job.done", function=..., handle=..., unique=...,
duration=..., outcome=...)`` call per line, as any other line is logged,
through a logger bound once or a module-level ``structlog.get_logger()``
proxy.  Lines are logged from inside a running uvloop, into a
pipe drained by a ``cat`` child (stderr under systemd is a journald socket: a
write costs a system call either way).  "per turn" is how many lines one
event-loop turn logs: 1 is a lone job (a write per line), 100 a busy worker.
The loop turn itself is measured without logging and subtracted.  Numbers are
process CPU time (user + system) of ``--rounds`` alternated rounds: the minimum
(what a line costs when the shared machine leaves us alone) and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import structlog
import uvloop

from gearworker import logs
from gearworker.logs.jobline import LogMiddleware
from gearworker.middleware import CompletedLine
from gearworker.worker.chain import AFTER_BATCH, AFTER_DELAY

NAMES = {
    "worker": "the worker's own: rendered a Runner batch at a time (completed_many)",
    "worker-one-by-one": "the same lines, one structlog call each (the worker before completed_many)",
    "new": "orjson, batched writes, one log.info per line, logger bound once",
    "new-proxy": "the same through a module-level get_logger() proxy",
    "previous": "stdlib json, write + flush per line, proxy",
    "new-filtered": "level warning (line filtered out), proxy",
}


def configure_previous(level: str, stream: Any) -> None:
    """The set-up before this change (commit 0cee75e): stdlib json, a write and a flush per line."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(__import__("logging"), level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


class _RunnerBatch:
    """The Runner's side of a completed job's line (gearworker.worker.chain.CompletedHooks.add and run)."""

    def __init__(self, middleware: LogMiddleware, one_by_one: bool) -> None:
        self.middleware, self.one_by_one = middleware, one_by_one
        self.lines: list[CompletedLine] = []
        self.loop = asyncio.get_running_loop()

    def completed(self, function: str, handle: bytes, unique: bytes, started: float) -> None:
        lines = self.lines
        lines.append((function, handle, unique, time.monotonic() - started, time.time()))
        if len(lines) == 1:
            self.loop.call_later(AFTER_DELAY, self.run)
        elif len(lines) == AFTER_BATCH:
            self.loop.call_soon(self.run)

    def run(self) -> None:
        lines, self.lines = self.lines, []
        if not lines:
            return
        if self.one_by_one:  # as before completed_many: one structlog call per line
            for line in lines:
                self.middleware.completed(*line)
        else:
            self.middleware.completed_many(lines)


async def _turns(log: Any, lines: int, per_turn: int, logging_on: bool) -> float:
    """CPU seconds for ``lines`` lines logged ``per_turn`` per loop turn (or the same turns, no line)."""
    handle, unique = "H:host:123456", "5b3c1c1e-6f1d-4c53-9a2e-0b7d2f6f9a10"
    batch = _RunnerBatch(*log) if isinstance(log, tuple) else None
    handle_b, unique_b, started = handle.encode(), unique.encode(), time.monotonic()
    start = time.process_time()
    for _ in range(lines // per_turn):
        if logging_on:
            for _ in range(per_turn):
                if batch is not None:
                    batch.completed("echo", handle_b, unique_b, started)
                else:
                    log.info(
                        "job.done", function="echo", handle=handle, unique=unique, duration=0.000123, outcome="complete"
                    )
        await asyncio.sleep(0)
    if batch is not None:
        batch.run()  # as the worker does on the way out
    await asyncio.sleep(0)  # the last batch is written
    return time.process_time() - start


def cost_us(setup: str, lines: int, per_turn: int) -> float:
    """Microseconds of CPU per line for one set-up (a key of ``NAMES``)."""
    sink = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert sink.stdin is not None
    stream = os.fdopen(os.dup(sink.stdin.fileno()), "w")
    try:
        if setup == "previous":
            configure_previous("info", stream)
        else:
            logs.configure("warning" if setup == "new-filtered" else "info", "json", stream=stream)
        logs.flush()
        # A proxy per set-up (a cached proxy keeps its first configuration); LogMiddleware binds
        # its logger once ("new" does the same), the rest of the code logs through proxies.
        log = structlog.get_logger("gearworker.worker")
        log.info("warm-up")  # the cached logger is built on first use
        if setup == "new":
            log = log.bind()
        elif setup in ("worker", "worker-one-by-one"):
            log = (LogMiddleware(), setup == "worker-one-by-one")
        bare = uvloop.run(_turns(log, lines, per_turn, False))
        logged = uvloop.run(_turns(log, lines, per_turn, True))
        logs.flush()
        return (logged - bare) / lines * 1e6
    finally:
        stream.close()
        sink.stdin.close()
        sink.wait()


def in_worker_us(rounds: int, jobs: int = 40_000) -> tuple[float, float]:
    """(min, median) of CPU us the line adds to a job in the worker's own path: bench.hotpath at info minus warning.

    A loop of log calls alone keeps structlog's code and data in the CPU caches;
    between jobs they are not, and the line costs more than ``cost_us`` says.
    """
    import re
    import subprocess

    per_level: dict[str, list[float]] = {"info": [], "warning": []}
    for _ in range(rounds):
        for level in per_level:  # alternated
            out = subprocess.run(
                [sys.executable, "-m", "bench.hotpath", "--jobs", str(jobs), "--no-metrics", "--log-level", level],
                capture_output=True,
                text=True,
                check=True,
            )
            per_level[level].append(float(re.match(r"([\d.]+) us", out.stdout).group(1)))  # type: ignore[union-attr]
    diffs = [a - b for a, b in zip(per_level["info"], per_level["warning"], strict=True)]
    return min(per_level["info"]) - min(per_level["warning"]), statistics.median(diffs)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.logcost", description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args()
    cases = [
        ("worker", 1),
        ("worker", 100),
        ("worker-one-by-one", 100),
        ("new", 1),
        ("new", 100),
        ("new-proxy", 100),
        ("previous", 1),
        ("previous", 100),
        ("new-filtered", 100),
    ]
    samples: dict[tuple[str, int], list[float]] = {c: [] for c in cases}
    for _ in range(args.rounds):
        for setup, per_turn in cases:  # alternated: a noisy minute hits every set-up alike
            samples[(setup, per_turn)].append(cost_us(setup, args.lines, per_turn))
    result = {f"{s} x{n}": min(v) for (s, n), v in samples.items()}
    if args.json:
        print(
            json.dumps(
                {"min_us": result, "median_us": {f"{s} x{n}": statistics.median(v) for (s, n), v in samples.items()}}
            )
        )
        return
    print(f"job.done log line, CPU us per line, {args.rounds} alternated rounds of {args.lines:,} lines into a pipe:\n")
    print("| set-up | lines per loop turn | min us per line | median |")
    print("|---|---|---|---|")
    for (setup, per_turn), v in samples.items():
        print(f"| {NAMES[setup]} | {per_turn} | {min(v):.2f} | {statistics.median(v):.2f} |")
    print(f"\nprevious / worker, 100 per turn: {result['previous x100'] / result['worker x100']:.1f}x", file=sys.stderr)


if __name__ == "__main__":
    main()
