"""How fast a worker answers a packet: from its wait for the socket returning to its next write.

    .venv/bin/python -m bench.reaction --rounds 4
    .venv/bin/python -m bench.reaction --rounds 4 --kind gearworker-defaults --kind php
    .venv/bin/python -m bench.reaction --rounds 4 --gap-us 1000   # each job starts on an idle machine

A lone job crosses the worker twice on its way back to the client: gearmand's
NOOP wakes it and it answers with a grab; JOB_ASSIGN brings the job and it
answers with the result.  Each answer's delay is the worker's own share of
the job's latency, and it is what ``bench.ab latency`` cannot resolve on a
noisy machine: a few microseconds among hundreds that wander by a hundred.

For each kind, alternated round by round, ``perf record`` traces the
worker's system calls (enter and exit, with kernel timestamps) while 2,000
lone no-op jobs run (``bench/php/latency.php``).  A *wake* is the return
of the wait (``epoll_pwait``, PHP's ``poll``); its *reaction* is the time
the enter of the first write after it.  Two figures:

* ``job -> result``: from the return of a read that brought more than a
  header (JOB_ASSIGN) to the write of WORK_COMPLETE;
* ``wake -> answer``: from the wait's return to the first write, when no job
  was read: the grab that answers NOOP.  libgearman sends that grab before it
  even reads the NOOP; PHP's figure also holds its PRE_SLEEP answering
  NO_JOB, a wake off the critical path that our worker does not have.

Prints the medians per kind.  Tracing adds a little to every system call,
so the figures are a bit higher than untraced, alike for every kind.  Needs
``perf`` and root.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from .procs import php, running

#: x86-64 numbers of the calls that matter here.
WAITS = {7, 232, 281}  # poll, epoll_wait, epoll_pwait
READS = {0, 45}  # read, recvfrom
WRITES = {1, 20, 44}  # write, writev, sendto

_LINE = re.compile(r"^\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+)(?: \(([^)]*)\)| = (-?\d+))")


def reactions(script: str, tid: int) -> dict[str, list[float]]:
    """Reaction times in us of thread ``tid`` in ``perf script`` output: to a job, to a wake."""
    found: dict[str, list[float]] = {"job": [], "wake": []}
    woke: float | None = None  # the wait returned: data to answer
    job: float | None = None  # a read brought more than a header (JOB_ASSIGN)
    for line in script.splitlines():
        m = _LINE.match(line)
        if m is None or int(m.group(1)) != tid:
            continue
        at, kind, nr = float(m.group(2)) * 1e6, m.group(3), int(m.group(4))
        if kind == "exit" and nr in WAITS:
            woke = at
        elif kind == "exit" and nr in READS and int(m.group(6)) > 12 and job is None:
            job = at
        elif kind == "enter" and nr in WRITES:
            if job is not None:
                found["job"].append(at - job)
            elif woke is not None:
                found["wake"].append(at - woke)
            woke = job = None
    return found


def one_round(kind: str, jobs: int, gap_us: int = 0) -> dict[str, float]:
    """Median reactions of one traced run, and the round's p50 latency."""
    with running(kind, 1, function="noop") as (gearmands, procs), tempfile.TemporaryDirectory() as tmp:
        g = gearmands[0]
        php("latency.php", g.address, "noop", 200, 0)  # warm-up, untraced
        data = Path(tmp) / "perf.data"
        pid = procs[0].pid
        perf = subprocess.Popen(
            [
                "perf",
                "record",
                "-q",
                "-e",
                "raw_syscalls:sys_enter,raw_syscalls:sys_exit",
                "-p",
                str(pid),
                "-o",
                str(data),
            ],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # perf attaches in the background: jobs run before that would go unseen
        try:
            samples = php("latency.php", g.address, "noop", jobs, 0, gap_us, timeout=600)["samples_us"]
        finally:
            perf.send_signal(2)
            perf.wait()
        script = subprocess.run(
            ["perf", "script", "-i", str(data), "-F", "tid,time,event,trace"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    found = reactions(script, pid)
    row = {name: statistics.median(values) for name, values in found.items() if values}
    row["wakes"] = len(found["wake"]) / max(1, len(found["job"]))
    row["p50"] = statistics.median(samples)
    return row


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.reaction", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--kind", action="append", help="worker kinds (default: gearworker-defaults and php)")
    p.add_argument(
        "--gap-us",
        type=int,
        default=0,
        help="pause before each job: each then starts on an idle machine (default 0: back to back)",
    )
    args = p.parse_args()
    kinds = args.kind or ["gearworker-defaults", "php"]
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for n in range(args.rounds):
        # Alternated, and in turn reversed (A B, then B A): a noisy minute hits every kind
        # alike, and no kind always runs first.
        for kind in kinds if n % 2 == 0 else kinds[::-1]:
            rows[kind].append(one_round(kind, args.jobs, args.gap_us))
    print(
        f"lone no-op jobs, {args.jobs:,} a round, {args.gap_us} us before each, {args.rounds} alternated rounds; "
        "medians of the rounds' medians (us): from the wait's return to the first write after it; "
        f"the differences from {kinds[0]} are medians of the rounds' differences\n"
    )
    print("| kind | job -> result | difference | wake -> answer | difference | wakes answered per job | p50 latency |")
    print("|---|---|---|---|---|---|---|")

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    def column(kind: str, name: str) -> list[float]:
        return [r.get(name, float("nan")) for r in rows[kind]]

    for kind in kinds:
        job, wake = column(kind, "job"), column(kind, "wake")
        job_d = med([a - b for a, b in zip(job, column(kinds[0], "job"), strict=True)])
        wake_d = med([a - b for a, b in zip(wake, column(kinds[0], "wake"), strict=True)])
        print(
            f"| {kind} | {med(job):.1f} | {job_d:+.1f} | {med(wake):.1f} | {wake_d:+.1f} | "
            f"{med(column(kind, 'wakes')):.2f} | {med(column(kind, 'p50')):.0f} |"
        )


if __name__ == "__main__":
    main()
