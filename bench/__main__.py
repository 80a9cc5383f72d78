"""Benchmark gearworker against PHP GearmanWorker (C libgearman) and aiogear, side by side.

    .venv/bin/python -m bench                 # everything, about 5-7 minutes on 2 cores
    .venv/bin/python -m bench --quick         # 1 run per case, short runs (a smoke test)
    .venv/bin/python -m bench --only tiny     # one case: tiny, sweep, latency, memory, resize, shutdown

Every case starts its own gearmand (``--threads=0``) on loopback and its own
workers.  Runs of the workers being compared are interleaved (A B C, A B C,
...) so that a noisy neighbour slows all of them alike; the table shows
medians.  The load is a PHP GearmanClient (C libgearman), so the client costs
the same whoever serves it.  The chart goes to artifacts/bench/bench.png.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from . import cases
from .procs import AIOGEAR_PYTHON, GEARMAND_THREADS, ROOT

CASES = ("tiny", "sweep", "latency", "memory", "resize", "shutdown")
WORKER_LABELS = {("gearworker", 1): "gearworker, 1 process", ("php", 1): "PHP GearmanWorker, 1 process",
                 ("php", 2): "PHP GearmanWorker, 2 processes", ("aiogear", 1): "aiogear 0.2.6, 8 connections"}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_tiny(runs: int, seconds: float) -> dict[tuple[str, int], list[cases.Throughput]]:
    kinds = [("gearworker", 1), ("php", 1), ("php", 2)]
    if AIOGEAR_PYTHON.exists():
        kinds.append(("aiogear", 1))
    else:
        _say(f"aiogear skipped: no {AIOGEAR_PYTHON} (python3 -m venv /tmp/aiogear-venv && "
             "/tmp/aiogear-venv/bin/pip install aiogear uvloop)")
    results: dict[tuple[str, int], list[cases.Throughput]] = {k: [] for k in kinds}
    for i in range(runs):
        for kind, n in kinds:
            r = cases.throughput(kind, n, 500, seconds)
            _say(f"tiny run {i + 1}/{runs} {kind} x{n}: {r.jobs_per_s:,.0f} jobs/s, {r.worker_us_per_job:.1f} us/job")
            results[(kind, n)].append(r)
    return results


def run_sweep(runs: int, seconds: float, levels: tuple[int, ...]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, list[float]]] = {"gearworker": {}, "php": {}}
    for _ in range(runs):
        for level in levels:
            for kind in out:
                out[kind].setdefault(level, []).append(cases.throughput(kind, 1, level, seconds).jobs_per_s)
    _say(f"sweep done: {out}")
    return {kind: {lvl: cases.median(v) for lvl, v in per.items()} for kind, per in out.items()}


def run_latency(runs: int, count: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"gearworker": [], "php": []}
    per_run: dict[str, list[tuple[float, float]]] = {"gearworker": [], "php": []}
    for _ in range(runs):
        for kind in samples:
            s = cases.latency(kind, count)
            samples[kind] += s
            per_run[kind].append((cases.percentile(s, 50), cases.percentile(s, 99)))
    _say(f"latency p50/p99 per run: {per_run}")
    return samples


def _row(name: str, ours: str, base: str, ratio: float | None, target: str, met: bool | None) -> str:
    r = "" if ratio is None else f"{ratio:.2f}"
    mark = "" if met is None else ("yes" if met else "**no**")
    return f"| {name} | {ours} | {base} | {r} | {target} | {mark} |"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs per case (medians are reported)")
    p.add_argument("--seconds", type=float, default=3.0, help="length of one throughput run")
    p.add_argument("--quick", action="store_true", help="1 run, 1 s per throughput run")
    p.add_argument("--only", action="append", choices=CASES, help="run only these cases (repeatable)")
    args = p.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 1.0
    chosen = args.only or list(CASES)
    if not shutil.which("php"):
        raise SystemExit("php-cli with php-gearman is needed: apt-get install php-cli php-gearman")
    started = time.monotonic()
    out_dir = ROOT / "artifacts" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)

    summary: list[str] = []
    tiny = sweep = lat = None
    if "tiny" in chosen:
        tiny = run_tiny(args.runs, args.seconds)
    if "sweep" in chosen:
        sweep = run_sweep(args.runs, args.seconds * 2 / 3, (1, 10, 50, 200))
        if tiny is not None:
            for kind in ("gearworker", "php"):
                sweep[kind][500] = cases.median([r.jobs_per_s for r in tiny[(kind, 1)]])
    if "latency" in chosen:
        lat = run_latency(args.runs, 2000 if not args.quick else 500)

    lines = [f"gearmand {_gearmand_version()} --threads={GEARMAND_THREADS}, loopback; {os.cpu_count()} cores; "
             f"medians of {args.runs} interleaved run(s); gearworker runs with --log-level warning and uvloop.", ""]
    if tiny is not None:
        lines += _tiny_table(tiny, args.seconds)
        med = {k: cases.median([r.jobs_per_s for r in v]) for k, v in tiny.items()}
        us = {k: cases.median([r.worker_us_per_job for r in v]) for k, v in tiny.items()}
        ours = med[("gearworker", 1)]
        summary.append(_row("tiny jobs/s vs 1 PHP process", f"{ours:,.0f}", f"{med[('php', 1)]:,.0f}",
                            ours / med[("php", 1)], ">= 1.5", ours / med[("php", 1)] >= 1.5))
        summary.append(_row("tiny jobs/s vs 2 PHP processes", f"{ours:,.0f}", f"{med[('php', 2)]:,.0f}",
                            ours / med[("php", 2)], ">= 1.2", ours / med[("php", 2)] >= 1.2))
        if ("aiogear", 1) in med:
            summary.append(_row("tiny jobs/s vs aiogear", f"{ours:,.0f}", f"{med[('aiogear', 1)]:,.0f}",
                                ours / med[("aiogear", 1)], "", None))
        summary.append(_row("worker CPU us per tiny job", f"{us[('gearworker', 1)]:.1f}", f"{us[('php', 1)]:.1f}",
                            us[("gearworker", 1)] / us[("php", 1)], "(reported)", None))
    if lat is not None:
        for pct in (50, 99):
            a, b = cases.percentile(lat["gearworker"], pct), cases.percentile(lat["php"], pct)
            summary.append(_row(f"no-op latency p{pct}, us", f"{a:.0f}", f"{b:.0f}", a / b, "<= 1.2", a / b <= 1.2))
    if "memory" in chosen:
        idle, peak, most = cases.memory()
        summary.append(_row(f"RSS with {most} async jobs in flight on 3 servers, MiB", f"{peak:.1f}",
                            f"idle {idle:.1f}", None, "<= 64", peak <= 64 and most >= 1000))
    if "resize" in chosen:
        summary += _resize_rows(args.runs, 6 if args.quick else 12)
    if "shutdown" in chosen:
        times = [cases.shutdown_time() for _ in range(max(3, args.runs + 2))]
        t = cases.median(times)
        summary.append(_row("SIGTERM to exit, idle connections, s", f"{t:.3f}", "", None, "< 0.5", t < 0.5))

    if summary:
        head = ["| target | gearworker | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
        lines += [*head, *summary, ""]
    lines.append(f"bench took {time.monotonic() - started:.0f} s")
    print("\n".join(lines))
    if sweep is not None or lat is not None:
        from .chart import draw

        path = draw(out_dir / "bench.png", sweep, lat)
        _say(f"chart: {path}")


def _tiny_table(tiny: dict[tuple[str, int], list[cases.Throughput]], seconds: float) -> list[str]:
    base = cases.median([r.jobs_per_s for r in tiny[("php", 1)]])
    lines = [f"Tiny jobs: 100-byte echo, foreground, one PHP client keeping 500 in flight, {seconds:g} s per run.", "",
             "| worker | jobs/s | vs 1 PHP | worker CPU us/job | gearmand CPU us/job | worker RSS MiB |",
             "|---|---|---|---|---|---|"]
    for key, runs in tiny.items():
        jps = cases.median([r.jobs_per_s for r in runs])
        lines.append(f"| {WORKER_LABELS[key]} | {jps:,.0f} | {jps / base:.2f} | "
                     f"{cases.median([r.worker_us_per_job for r in runs]):.1f} | "
                     f"{cases.median([r.gearmand_us_per_job for r in runs]):.1f} | "
                     f"{cases.median([r.rss_mib for r in runs]):.1f} |")
    return [*lines, ""]


def _resize_rows(runs: int, jobs: int) -> list[str]:
    workload, _ = cases.resize_photo()
    procs = 2
    single = cases.median([cases.resize_in_process(workload, max(3, jobs // 3)) for _ in range(runs)])
    pooled = cases.median([cases.resize_worker(workload, procs, jobs) for _ in range(runs)])
    ratio = pooled / (procs * single)
    return [_row(f"resize 12 MP, pool of {procs} via gearmand, img/s", f"{pooled:.2f}",
                 f"{procs} x {single:.2f} in-process", ratio, ">= 0.9", ratio >= 0.9)]


def _gearmand_version() -> str:
    import subprocess

    from gearmand import GEARMAND

    out = subprocess.run([GEARMAND, "--version"], capture_output=True, text=True, check=False).stdout
    return (out.split() or ["", "?"])[1]


if __name__ == "__main__":
    main()
