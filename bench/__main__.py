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
WORKER_LABELS = {
    ("gearworker", 1): "gearworker, 1 process (defaults)",
    ("gearworker-gp32", 1): "gearworker, grab_pipeline=32",
    ("gearworker-gp32-nometrics", 1): "gearworker, grab_pipeline=32, no unserved metrics (bench/unmetered.py)",
    ("php", 1): "PHP GearmanWorker, 1 process",
    ("php", 2): "PHP GearmanWorker, 2 processes",
    ("aiogear", 1): "aiogear 0.2.6, 8 connections, uvloop",
}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_tiny(runs: int, seconds: float) -> dict[tuple[str, int], list[cases.Throughput]]:
    kinds = [("gearworker", 1), ("gearworker-gp32", 1), ("gearworker-gp32-nometrics", 1), ("php", 1), ("php", 2)]
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


def run_latency(runs: int, count: int) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, float]]]]:
    """All samples per worker, and (p50, p99) of each run."""
    samples: dict[str, list[float]] = {"gearworker": [], "php": []}
    per_run: dict[str, list[tuple[float, float]]] = {"gearworker": [], "php": []}
    for _ in range(runs):
        for kind in samples:
            s = cases.latency(kind, count)
            samples[kind] += s
            per_run[kind].append((cases.percentile(s, 50), cases.percentile(s, 99)))
    _say(f"latency p50/p99 per run: {per_run}")
    return samples, per_run


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    """Median of the per-round ratios: each round ran both back to back, so a noisy minute hits both."""
    return cases.median([a / b for a, b in zip(ours, theirs, strict=True)])


def _row(name: str, ours: str, base: str, ratio: float | None, target: str, met: bool | None) -> str:
    r = "" if ratio is None else f"{ratio:.2f}"
    mark = "" if met is None else ("yes" if met else "**no**")
    return f"| {name} | {ours} | {base} | {r} | {target} | {mark} |"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5, help="rounds of the tiny-job and latency cases (3 for the others)")
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
        sweep = run_sweep(min(args.runs, 3), args.seconds * 2 / 3, (1, 10, 50, 200))
        if tiny is not None:
            for kind in ("gearworker", "php"):
                sweep[kind][500] = cases.median([r.jobs_per_s for r in tiny[(kind, 1)]])
    if "latency" in chosen:
        lat = run_latency(args.runs, 2000 if not args.quick else 500)

    lines = [f"gearmand {_gearmand_version()} --threads={GEARMAND_THREADS}, loopback; {os.cpu_count()} cores; "
             f"medians of {args.runs} interleaved rounds (3 for sweep and resize); "
             "gearworker runs with --log-level warning and uvloop.", ""]
    if tiny is not None:
        lines += _tiny_table(tiny, args.seconds)
        med = {k: cases.median([r.jobs_per_s for r in v]) for k, v in tiny.items()}
        rates = {k: [r.jobs_per_s for r in v] for k, v in tiny.items()}
        us = {k: cases.median([r.worker_us_per_job for r in v]) for k, v in tiny.items()}
        ours = med[("gearworker", 1)]
        for key, target in ((("php", 1), 1.5), (("php", 2), 1.2), (("aiogear", 1), None)):
            if key not in med:
                continue
            ratio = paired_ratio(rates[("gearworker", 1)], rates[key])
            summary.append(_row(f"tiny jobs/s vs {WORKER_LABELS[key]}", f"{ours:,.0f}", f"{med[key]:,.0f}", ratio,
                                "" if target is None else f">= {target}",
                                None if target is None else ratio >= target))
        summary.append(_row("worker CPU us per tiny job", f"{us[('gearworker', 1)]:.1f}", f"{us[('php', 1)]:.1f}",
                            us[("gearworker", 1)] / us[("php", 1)], "(reported)", None))
    if lat is not None:
        samples, per_run = lat
        for i, pct in enumerate((50, 99)):
            a, b = cases.percentile(samples["gearworker"], pct), cases.percentile(samples["php"], pct)
            ratio = paired_ratio([r[i] for r in per_run["gearworker"]], [r[i] for r in per_run["php"]])
            summary.append(_row(f"no-op latency p{pct}, us (one job at a time)", f"{a:.0f}", f"{b:.0f}", ratio,
                                "<= 1.2", ratio <= 1.2))
    if "memory" in chosen:
        idle, peak, most = cases.memory()
        summary.append(_row(f"RSS with {most} async jobs in flight on 3 servers, MiB", f"{peak:.1f}",
                            f"idle {idle:.1f}", None, "<= 64", peak <= 64 and most >= 1000))
    if "resize" in chosen:
        summary += _resize_rows(min(args.runs, 3), 6 if args.quick else 12)
    if "shutdown" in chosen:
        times = [cases.shutdown_time() for _ in range(5)]
        t = cases.median(times)
        summary.append(_row("SIGTERM to exit, idle connections, s", f"{t:.3f}", "", None, "< 0.5", t < 0.5))

    if summary:
        head = ["| target | gearworker | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
        lines += [*head, *summary, ""]
    lines.append(f"bench took {time.monotonic() - started:.0f} s")
    print("\n".join(lines))
    if sweep is not None or lat is not None:
        from .chart import draw

        path = draw(out_dir / "bench.png", sweep, lat[0] if lat is not None else None)
        _say(f"chart: {path}")


def _tiny_table(tiny: dict[tuple[str, int], list[cases.Throughput]], seconds: float) -> list[str]:
    base = [r.jobs_per_s for r in tiny[("php", 1)]]
    lines = [f"Tiny jobs: 100-byte echo, foreground, one PHP client keeping 500 in flight, {seconds:g} s per run.", "",
             "| worker | jobs/s | vs 1 PHP (median of per-round ratios) | worker CPU us/job | gearmand CPU us/job "
             "| worker RSS MiB |",
             "|---|---|---|---|---|---|"]
    for key, runs in tiny.items():
        jps = cases.median([r.jobs_per_s for r in runs])
        ratio = paired_ratio([r.jobs_per_s for r in runs], base)
        lines.append(f"| {WORKER_LABELS[key]} | {jps:,.0f} | {ratio:.2f} | "
                     f"{cases.median([r.worker_us_per_job for r in runs]):.1f} | "
                     f"{cases.median([r.gearmand_us_per_job for r in runs]):.1f} | "
                     f"{cases.median([r.rss_mib for r in runs]):.1f} |")
    return [*lines, ""]


def _resize_rows(runs: int, jobs: int) -> list[str]:
    workload, _ = cases.resize_photo()
    procs = 2
    single = cases.median([cases.resize_in_process(workload, max(3, jobs // 3)) for _ in range(runs)])
    pooled = [cases.resize_worker(workload, procs, jobs) for _ in range(runs)]
    rate = cases.median([r.images_per_s for r in pooled])
    pool_ms = cases.median([r.pool_ms_per_image for r in pooled])
    over_ms = cases.median([r.overhead_ms_per_image for r in pooled])
    plain = cases.median([cases.resize_plain_processes(workload, procs, jobs) for _ in range(runs)])
    ratio = rate / (procs * single)
    return [
        _row(f"resize 12 MP, pool of {procs} via gearmand, img/s", f"{rate:.2f}", f"{procs} x {single:.2f} in-process",
             ratio, ">= 0.9", ratio >= 0.9),
        _row(f"resize: the same vs {procs} plain processes resizing at once (no Gearman), img/s", f"{rate:.2f}",
             f"{plain:.2f}", rate / plain, "(>= 0.9)", rate / plain >= 0.9),
        _row("resize: CPU ms per image outside the pool (worker main process + gearmand + client) / in the pool",
             f"{over_ms:.1f} / {pool_ms:.0f}", f"{1000 / single:.0f} ms in-process", over_ms / pool_ms, "(< 0.1)",
             over_ms / pool_ms < 0.1),
    ]


def _gearmand_version() -> str:
    import subprocess

    from gearmand import GEARMAND

    out = subprocess.run([GEARMAND, "--version"], capture_output=True, text=True, check=False).stdout
    return (out.split() or ["", "?"])[1]


if __name__ == "__main__":
    main()
