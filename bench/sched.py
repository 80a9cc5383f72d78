"""Where a lone job's time goes besides our code: CPU, context switches and CPU migrations per job.

    .venv/bin/python -m bench.sched --rounds 6
    .venv/bin/python -m bench.sched --rounds 6 --kind gearworker-defaults --kind php

For each kind, alternated round by round: one worker and a fresh gearmand,
2,000 lone no-op jobs from ``bench/php/latency.php`` (as ``bench.ab latency``),
and the kernel's own counters of the worker's and gearmand's threads
(``/proc/PID/task/*/sched``: run time, switches, migrations) read before and
after.  Prints the medians per job, side by side, and the per-round p50 beside
them: a round whose p50 is far off shows which counter moved with it.
This kernel keeps no run-queue wait (``/proc/PID/schedstat`` reads 0).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from pathlib import Path

from . import cases
from .procs import WORKERS, php, running

FIELDS = ("se.sum_exec_runtime", "nr_switches", "nr_involuntary_switches", "se.nr_migrations")


def counters(pid: int) -> dict[str, float]:
    """The sums over every thread of ``pid`` of :data:`FIELDS` (run time in ms, as the kernel prints it)."""
    total = dict.fromkeys(FIELDS, 0.0)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "sched").read_text()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() in total:
                total[name.strip()] += float(value)
    return total


def one_round(kind: str, jobs: int) -> dict[str, float]:
    """Per-job counters of the worker (``w.``) and gearmand (``g.``), and the round's p50 in us."""
    with running(kind, 1, function="noop") as (gearmands, procs):
        g = gearmands[0]
        assert g.proc is not None
        php("latency.php", g.address, "noop", 200, 0)  # warm-up, untimed
        pids = {"w": procs[0].pid, "g": g.proc.pid}
        before = {who: counters(pid) for who, pid in pids.items()}
        samples = php("latency.php", g.address, "noop", jobs, 0)["samples_us"]
        after = {who: counters(pid) for who, pid in pids.items()}
    row = {"p50": cases.percentile([float(x) for x in samples], 50)}
    for who in pids:
        for name in FIELDS:
            per_job = (after[who][name] - before[who][name]) / jobs
            row[f"{who}.{name}"] = per_job * 1000 if name == "se.sum_exec_runtime" else per_job  # ms -> us
    return row


def round_trip_us(count: int = 3000) -> float:
    """The machine's floor: p50 of a one-byte round trip between two processes over a socketpair.

    Two wake-ups, nothing else; a lone gearman job crosses about six on its way
    (client, gearmand, worker, gearmand, worker, gearmand, client).
    """
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echoing child: blocks in recv, as a PHP worker does
        a.close()
        while data := b.recv(64):
            b.send(data)
        os._exit(0)
    b.close()
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        a.send(b"x")
        a.recv(64)
        samples.append((time.perf_counter_ns() - started) / 1000)
    a.close()
    os.waitpid(pid, 0)
    return cases.percentile(samples, 50)


LABELS = {
    "se.sum_exec_runtime": "CPU us",
    "nr_switches": "switches",
    "nr_involuntary_switches": "preempted",
    "se.nr_migrations": "migrations",
}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sched", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument(
        "--kind", action="append", choices=sorted(WORKERS), help="worker kinds (default: gearworker-defaults and php)"
    )
    args = p.parse_args()
    kinds = args.kind or ["gearworker-defaults", "php"]
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for kind in kinds:  # alternated: a noisy minute hits every kind alike
            rows[kind].append(one_round(kind, args.jobs))
    print(
        f"lone no-op jobs, {args.jobs:,} a round, {args.rounds} alternated rounds: medians per job "
        "(w. the worker's threads, g. gearmand's)\n"
    )
    columns = ["p50"] + [f"{who}.{name}" for who in ("w", "g") for name in FIELDS]
    heads = ["p50 us"] + [f"{who}. {LABELS[name]}" for who in ("w", "g") for name in FIELDS]
    print("| kind | " + " | ".join(heads) + " |")
    print("|---" * (len(heads) + 1) + "|")
    for kind in kinds:
        cells = [statistics.median(r[c] for r in rows[kind]) for c in columns]
        print(f"| {kind} | " + " | ".join(f"{v:.0f}" if i == 0 else f"{v:.2f}" for i, v in enumerate(cells)) + " |")
    floor = statistics.median(round_trip_us() for _ in range(3))
    print(f"\nthis machine: a round trip between two processes (two wake-ups) takes {floor:.0f} us (p50)")
    print("\nper round (p50 us, worker switches, worker migrations):")
    for kind in kinds:
        print(
            f"  {kind}: "
            + "; ".join(f"{r['p50']:.0f} {r['w.nr_switches']:.2f} {r['w.se.nr_migrations']:.2f}" for r in rows[kind])
        )


if __name__ == "__main__":
    main()
