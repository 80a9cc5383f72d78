"""Throughput over a slow link: workers 1, 5 and 20 ms (one way) from gearmand.

    .venv/bin/python -m bench.latency               # 3 rounds, 4 s per run: about 2-3 minutes
    .venv/bin/python -m bench.latency --rounds 1 --seconds 2

The delay comes from tests/network/delayproxy.py (this kernel has no netem): every
worker connection goes through it, so each round trip between a worker and
gearmand takes 2 x DELAY longer.  The load is one PHP GearmanClient (C
libgearman, bench/php/load.php) on loopback next to gearmand keeping 500 jobs in
flight, the same for every worker.  A PHP GearmanWorker does one job per round
trip (GRAB_JOB, JOB_ASSIGN, WORK_COMPLETE, ...); gearworker keeps up to
grab_pipeline grabs in flight per connection under load, so it does up to
grab_pipeline jobs per round trip: the grab_pipeline=8 column shows what the
default of 32 buys on a long link.  Workers compared run back to back in each round; the table shows
medians of jobs/s and of the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from .procs import ROOT, fresh_gearmand, php, start_workers, stop, wait_registered

sys.path.insert(0, str(ROOT / "tests" / "network"))

from netlab import DelayProxy

DELAYS_MS = (1, 5, 20)
KINDS = (("gearworker-defaults", 1), ("gearworker-defaults-gp8", 1), ("php", 1), ("php", 4))
LABELS = {
    ("gearworker-defaults", 1): "gearworker (defaults: grab_pipeline=32)",
    ("gearworker-defaults-gp8", 1): "gearworker, grab_pipeline=8 (for comparison)",
    ("php", 1): "PHP, 1 process",
    ("php", 4): "PHP, 4 processes",
}
IN_FLIGHT = 500


def run_one(kind: str, count: int, delay_ms: float, seconds: float) -> float:
    """Jobs/s of ``count`` workers of ``kind`` behind a ``delay_ms`` proxy."""
    g = fresh_gearmand()
    proxy = DelayProxy(g.address, delay_ms).start()
    procs = []
    try:
        procs = start_workers(kind, [proxy.address], count)
        wait_registered(g, "echo", count, procs)
        php("load.php", g.address, "echo", 100, IN_FLIGHT, 0.5)  # warm-up
        result = php("load.php", g.address, "echo", 100, IN_FLIGHT, seconds, timeout=seconds + 120)
    finally:
        stop(procs)
        proxy.stop()
        g.stop()
    if result["bad"]:
        raise RuntimeError(f"{kind} x{count} at {delay_ms} ms: {result['bad']} wrong results")
    return float(result["jobs"]) / float(result["seconds"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    rates: dict[tuple[int, str, int], list[float]] = {}
    ratios: dict[tuple[int, int], list[float]] = {}
    for r in range(args.rounds):
        for delay in DELAYS_MS:
            got = {}
            for kind, count in KINDS:
                got[(kind, count)] = run_one(kind, count, delay, args.seconds)
                rates.setdefault((delay, kind, count), []).append(got[(kind, count)])
                print(
                    f"round {r + 1}/{args.rounds} {delay} ms {kind} x{count}: {got[(kind, count)]:,.0f} jobs/s",
                    file=sys.stderr,
                    flush=True,
                )
            for n in (1, 4):
                ratios.setdefault((delay, n), []).append(got[("gearworker-defaults", 1)] / got[("php", n)])
    print(table(rates, ratios, args.rounds, args.seconds))


def table(
    rates: dict[tuple[int, str, int], list[float]],
    ratios: dict[tuple[int, int], list[float]],
    rounds: int,
    seconds: float,
) -> str:
    lines = [
        f"100-byte echo, foreground, {IN_FLIGHT} in flight from one PHP client; workers behind the delay "
        f"proxy; medians of {rounds} rounds x {seconds:g} s.",
        "",
        "| one-way delay | "
        + " | ".join(f"{LABELS[k]} jobs/s" for k in KINDS)
        + " | gearworker vs 1 PHP | gearworker vs 4 PHP |",
        "|---|" + "---|" * (len(KINDS) + 2),
    ]
    for delay in DELAYS_MS:
        cells = [f"{statistics.median(rates[(delay, kind, n)]):,.0f}" for kind, n in KINDS]
        cells += [f"{statistics.median(ratios[(delay, n)]):.1f}x" for n in (1, 4)]
        lines.append(f"| {delay} ms | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
