"""Lone-job latency of our worker and PHP's, measured job by job in turn on one gearmand.

    .venv/bin/python -m bench.paired --rounds 3
    .venv/bin/python -m bench.paired --rounds 3 --gap-us 1000 --kind gearworker-defaults-warning
    BENCH_BASE=/tmp/gw-base .venv/bin/python -m bench.paired --gap-us 1000 --against gearworker-defaults-base

``bench.ab latency`` alternates whole runs, each with its own gearmand and
worker, seconds apart; on this shared 2-core machine their p50s wander by a
third from one run to the next, more than the difference it looks for.
Here both workers wait on one gearmand at once, ours serving ``noop`` and
PHP's the same function as ``php_noop``, and one PHP client
(``bench/php/paired.php``) sends lone no-op jobs to each in turn: A then B,
then B then A.  Every pair meets the machine in the same state, so the
per-pair ratio holds still while the machine's speed moves.

Each worker is idle while the other's job runs, but a job can begin while
the previous one's worker still tidies up (our bookkeeping after the result,
PHP's NO_JOB and PRE_SLEEP round trip): ``--gap-us`` waits that long before
each job, so every job starts on an idle machine.

``--against KIND`` puts a second gearworker in PHP's place (its no-op
handler named ``php_noop``, ``bench/handlers_b``): an A/B of two checkouts
or settings, job by job.

Prints, per round, each side's p50 and p99 and the median of the per-pair
ratios, and the medians over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from . import cases
from .procs import WORKERS, fresh_gearmand, php, start_workers, stop, wait_registered

B_HANDLERS = Path(__file__).resolve().parent / "handlers_b"


def one_round(kind: str, pairs: int, gap_us: int, against: str = "php") -> dict[str, float]:
    """p50 and p99 of each side and the median per-pair ratio (ours / theirs) of one round."""
    g = fresh_gearmand()
    procs = []
    try:
        # The B side serves php_noop: PHP's worker takes the prefix, a gearworker another handlers folder
        # (the last --handlers given wins).
        b_extra = ["php_"] if against == "php" else ["--handlers", str(B_HANDLERS)]
        procs = start_workers(kind, [g.address]) + start_workers(against, [g.address], extra=b_extra)
        wait_registered(g, "noop", 1, procs)
        wait_registered(g, "php_noop", 1, procs)
        got = php("paired.php", g.address, "noop", "php_noop", pairs, 100, gap_us, timeout=600)
    finally:
        stop(procs)
        g.stop()
    ours, theirs = [float(x) for x in got["a"]], [float(x) for x in got["b"]]
    return {
        "ours p50": cases.percentile(ours, 50),
        "php p50": cases.percentile(theirs, 50),
        "ours p99": cases.percentile(ours, 99),
        "php p99": cases.percentile(theirs, 99),
        "pair ratio": statistics.median(a / b for a, b in zip(ours, theirs, strict=True)),
        "p50 ratio": cases.percentile(ours, 50) / cases.percentile(theirs, 50),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--gap-us", type=int, default=0, help="pause before each job (0: back to back)")
    p.add_argument("--kind", default="gearworker-defaults", choices=[k for k in WORKERS if k.startswith("gearworker")])
    p.add_argument("--against", default="php", choices=list(WORKERS), help="the B side (default: PHP's worker)")
    args = p.parse_args()
    rows = [one_round(args.kind, args.pairs, args.gap_us, args.against) for _ in range(args.rounds)]
    print(
        f"{args.kind} against {args.against}, on one gearmand, lone no-op jobs in turn: {args.pairs:,} pairs "
        f'a round, {args.gap_us} us before each job ("php" in the columns: the B side)\n'
    )
    columns = list(rows[0])
    print("| round | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for i, row in enumerate(rows, 1):
        print(f"| {i} | " + " | ".join(_cell(c, row[c]) for c in columns) + " |")
    print("| median | " + " | ".join(_cell(c, statistics.median(r[c] for r in rows)) for c in columns) + " |")


def _cell(column: str, value: float) -> str:
    return f"{value:.2f}" if "ratio" in column else f"{value:.0f} us"


if __name__ == "__main__":
    main()
