"""A/B of worker kinds on one case, rounds alternated, each kind's median and its ratio to the last kind.

    .venv/bin/python -m bench.ab latency gearworker-defaults gearworker-defaults-warning php --rounds 8
    .venv/bin/python -m bench.ab throughput gearworker-defaults gearworker-defaults-gp8 php --rounds 3

Kinds are the keys of ``bench.procs.WORKERS``.  ``latency``: p50 of 2,000 lone
no-op jobs (``bench/php/latency.php``); ``throughput``: jobs/s of 100-byte echo
jobs with 500 in flight for ``--seconds``.  Ratios are medians of the per-round
ratios against the last kind named, measured minutes apart on a noisy machine
only when the rounds agree.
"""

from __future__ import annotations

import argparse
import statistics

from . import cases
from .procs import WORKERS


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    p.add_argument("case", choices=["latency", "throughput"])
    p.add_argument("kinds", nargs="+", choices=sorted(WORKERS))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=3.0, help="length of one throughput run")
    args = p.parse_args()
    got: dict[str, list[float]] = {k: [] for k in args.kinds}
    for _ in range(args.rounds):
        for kind in args.kinds:  # alternated: a noisy minute hits every kind alike
            if args.case == "latency":
                got[kind].append(cases.percentile(cases.latency(kind, 2000), 50))
            else:
                got[kind].append(cases.throughput(kind, 1, 500, args.seconds).jobs_per_s)
    unit = "p50 us" if args.case == "latency" else "jobs/s"
    base = args.kinds[-1]
    print(f"{args.case}, {args.rounds} alternated rounds; ratio: median of per-round ratios to {base}\n")
    print(f"| kind | {unit} (median) | rounds | ratio |")
    print("|---|---|---|---|")
    for kind in args.kinds:
        ratio = statistics.median(a / b for a, b in zip(got[kind], got[base], strict=True))
        rounds = ", ".join(f"{v:,.0f}" for v in got[kind])
        print(f"| {kind} | {statistics.median(got[kind]):,.0f} | {rounds} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
