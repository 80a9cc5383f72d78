"""Benchmark gearworker against PHP GearmanWorker (C libgearman) and aiogear, side by side.

    .venv/bin/python -m bench                   # everything, about 10-12 minutes on 2 cores
    .venv/bin/python -m bench --quick           # 1 run per case, short runs (a smoke test)
    .venv/bin/python -m bench --only throughput # one case: throughput (= tiny), sweep, latency, client,
                                                # memory, resize, logcost, shutdown (repeatable)

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

from . import cases, paired
from .procs import AIOGEAR_PYTHON, GEARMAND_THREADS, ROOT

CASES = ("tiny", "throughput", "sweep", "latency", "client", "memory", "resize", "logcost", "shutdown")
WORKER_LABELS = {
    ("gearworker-defaults", 1): "gearworker, 1 process, defaults (info log: a JSON line per job into a pipe)",
    ("gearworker", 1): "gearworker, 1 process, tuned (--log-level warning --concurrency 1000)",
    ("gearworker-defaults-gp8", 1): "gearworker, 1 process, defaults but grab_pipeline=8 (for comparison)",
    ("php", 1): "PHP GearmanWorker, 1 process",
    ("php", 2): "PHP GearmanWorker, 2 processes",
    ("aiogear", 1): "aiogear 0.2.6, 8 connections, uvloop",
}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_tiny(runs: int, seconds: float) -> dict[tuple[str, int], list[cases.Throughput]]:
    kinds = [("gearworker-defaults", 1), ("gearworker", 1), ("gearworker-defaults-gp8", 1), ("php", 1), ("php", 2)]
    if AIOGEAR_PYTHON.exists():
        kinds.append(("aiogear", 1))
    else:
        _say(
            f"aiogear skipped: no {AIOGEAR_PYTHON} (python3 -m venv /tmp/aiogear-venv && "
            "/tmp/aiogear-venv/bin/pip install aiogear uvloop)"
        )
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


#: The lone-job latency runs: gearworker at its defaults, the same with every handler started as a Task
#: (the worker before eager start, bench/tasks_first.py), PHP.
LATENCY_KINDS = {"gearworker": "gearworker-defaults", "tasks": "gearworker-defaults-tasks", "php": "php"}


def run_latency(runs: int, count: int) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, float]]]]:
    """All samples per worker, and (p50, p99) of each run."""
    samples: dict[str, list[float]] = {k: [] for k in LATENCY_KINDS}
    per_run: dict[str, list[tuple[float, float]]] = {k: [] for k in LATENCY_KINDS}
    for _ in range(runs):
        for name, kind in LATENCY_KINDS.items():
            # gearworker at its defaults: the job.done line is part of a lone job's path.
            s = cases.latency(kind, count)
            samples[name] += s
            per_run[name].append((cases.percentile(s, 50), cases.percentile(s, 99)))
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
    chosen = {"tiny" if c == "throughput" else c for c in (args.only or CASES)}
    from gearworker import logs

    logs.configure("warning", "json")  # the in-process Client's info lines would land among the tables
    if not shutil.which("php"):
        raise SystemExit("php-cli with php-gearman is needed: apt-get install php-cli php-gearman")
    started = time.monotonic()
    out_dir = ROOT / "artifacts" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    few = 1 if args.quick else max(3, min(args.runs, 3))  # rounds of the slower cases: medians of >= 3

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
        # Lone jobs as production sees them: 1 ms apart, each from an idle machine, ours and PHP's in turn.
        spaced = [
            paired.one_round("gearworker-defaults", 1000 if not args.quick else 300, 1000) for _ in range(args.runs)
        ]
        _say(f"paired latency, 1 ms apart, per round: {spaced}")

    lines = [
        f"gearmand {_gearmand_version()} --threads={GEARMAND_THREADS}, loopback; {os.cpu_count()} cores; "
        f"medians of {args.runs} interleaved rounds ({few} for sweep, client, memory and resize); "
        "gearworker on uvloop. Spread is min-max of the per-round values.",
        "",
    ]
    if tiny is not None:
        lines += _tiny_table(tiny, args.seconds)
        summary += _tiny_rows(tiny)
    if lat is not None:
        samples, per_run = lat
        for name, label in (
            ("gearworker", "gearworker at defaults"),
            ("tasks", "defaults, but every handler started as a Task: before eager start"),
        ):
            for i, pct in enumerate((50, 99)):
                a, b = cases.percentile(samples[name], pct), cases.percentile(samples["php"], pct)
                ours, theirs = [r[i] for r in per_run[name]], [r[i] for r in per_run["php"]]
                per_round = [x / y for x, y in zip(ours, theirs, strict=True)]
                ratio = cases.median(per_round)
                summary.append(
                    _row(
                        f"no-op latency p{pct}, us, one job at a time ({label})",
                        f"{a:.0f} ({_spread(ours, '.0f')})",
                        f"{b:.0f} ({_spread(theirs, '.0f')})",
                        ratio,
                        f"<= 1.0 ({_spread(per_round)})",
                        ratio <= 1.0,
                    )
                )
        for pct in (50, 99):
            ours, theirs = [r[f"ours p{pct}"] for r in spaced], [r[f"php p{pct}"] for r in spaced]
            per_round = [r[f"ours p{pct}"] / r[f"php p{pct}"] for r in spaced]
            ratio = cases.median(per_round)
            summary.append(
                _row(
                    f"no-op latency p{pct}, us, lone jobs 1 ms apart, ours and PHP's in turn on one "
                    "gearmand (bench.paired --gap-us 1000)",
                    f"{cases.median(ours):.0f} ({_spread(ours, '.0f')})",
                    f"{cases.median(theirs):.0f} ({_spread(theirs, '.0f')})",
                    ratio,
                    f"<= 1.0 ({_spread(per_round)})",
                    ratio <= 1.0,
                )
            )
    if "client" in chosen:
        summary += _client_rows(few, 5000 if args.quick else 20_000)
    if "memory" in chosen:
        jobs = 10_000
        idle, peak, most = cases.memory(jobs)
        summary.append(
            _row(
                f"RSS with {most:,} of {jobs:,} async jobs in flight on 3 servers, MiB",
                f"{peak:.1f}",
                f"idle {idle:.1f}",
                None,
                "<= 128",
                peak <= 128 and most >= jobs,
            )
        )
    if "resize" in chosen:
        summary += _resize_rows(few, 6 if args.quick else 12)
    if "logcost" in chosen:
        summary += _logcost_rows(3 if args.quick else 7)
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
        try:
            from .chart import draw
        except ImportError:  # matplotlib comes with the dev extra; the tables above are the result
            _say("no chart: matplotlib is not installed (pip install -e '.[dev]')")
            return
        path = draw(out_dir / "bench.png", sweep, lat[0] if lat is not None else None)
        _say(f"chart: {path}")


def _spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def _tiny_rows(tiny: dict[tuple[str, int], list[cases.Throughput]]) -> list[str]:
    rows: list[str] = []
    med = {k: cases.median([r.jobs_per_s for r in v]) for k, v in tiny.items()}
    rates = {k: [r.jobs_per_s for r in v] for k, v in tiny.items()}
    us = {k: cases.median([r.worker_us_per_job for r in v]) for k, v in tiny.items()}
    for ours, label, targets in (
        (("gearworker-defaults", 1), "defaults", {("php", 1): 2.0, ("php", 2): 1.5}),
        (("gearworker", 1), "tuned", {}),
    ):
        for key in (("php", 1), ("php", 2), ("aiogear", 1)):
            if key not in med:
                continue
            per_round = [a / b for a, b in zip(rates[ours], rates[key], strict=True)]
            ratio, target = cases.median(per_round), targets.get(key)
            rows.append(
                _row(
                    f"tiny jobs/s, gearworker {label} vs {WORKER_LABELS[key]}",
                    f"{med[ours]:,.0f}",
                    f"{med[key]:,.0f}",
                    ratio,
                    f"({_spread(per_round)})" if target is None else f">= {target} ({_spread(per_round)})",
                    None if target is None else ratio >= target,
                )
            )
    d, php = us[("gearworker-defaults", 1)], us[("php", 1)]
    rows.append(
        _row(
            "worker CPU us per tiny job, defaults vs 1 PHP worker", f"{d:.1f}", f"{php:.1f}", d / php, "< 1.0", d < php
        )
    )
    return rows


def _client_rows(rounds: int, jobs: int) -> list[str]:
    from . import client_bench

    rates, _ = client_bench.compare(jobs, 100, 100, rounds)
    ours, php = rates["gearworker Client (uvloop)"], rates["PHP GearmanClient (addTask+runTasks)"]
    per_round = [a / b for a, b in zip(ours, php, strict=True)]
    ratio = cases.median(per_round)
    return [
        _row(
            f"Client: {jobs:,} echo jobs, 100 in flight, jobs/s vs PHP GearmanClient",
            f"{cases.median(ours):,.0f}",
            f"{cases.median(php):,.0f}",
            ratio,
            f">= 1.0 ({_spread(per_round)})",
            ratio >= 1.0,
        )
    ]


def _logcost_rows(rounds: int) -> list[str]:
    from . import logcost

    rows: list[str] = []
    for per_turn, name in ((100, "a busy worker, 100 lines per loop turn"), (1, "a lone job, 1 line per loop turn")):
        new: list[float] = []
        old: list[float] = []
        for _ in range(rounds):  # alternated
            new.append(logcost.cost_us("worker", 20_000, per_turn))  # as the worker writes it: a batch at a time
            old.append(logcost.cost_us("previous", 20_000, per_turn))
        rows.append(
            _row(
                f"job.done log line alone, CPU us (min / median of {rounds}, bench.logcost; {name})",
                f"{min(new):.2f} / {cases.median(new):.2f}",
                f"{min(old):.2f} before",
                min(new) / min(old),
                "<= 2 us",
                min(new) <= 2.0,
            )
        )
    low, mid = logcost.in_worker_us(rounds)
    rows.append(
        _row(
            f"job.done log line in the worker's path, CPU us (bench.hotpath info - warning over {rounds} "
            "alternated rounds: the minimums' difference / the median of the rounds' differences)",
            f"{low:.1f} / {mid:.1f}",
            "",
            None,
            "<= 2 us",
            low <= 2.0,
        )
    )
    return rows


def _tiny_table(tiny: dict[tuple[str, int], list[cases.Throughput]], seconds: float) -> list[str]:
    base = [r.jobs_per_s for r in tiny[("php", 1)]]
    lines = [
        f"Tiny jobs: 100-byte echo, foreground, one PHP client keeping 500 in flight, {seconds:g} s per run.",
        "",
        "| worker | jobs/s | vs 1 PHP (median of per-round ratios) | worker CPU us/job | gearmand CPU us/job "
        "| worker RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for key, runs in tiny.items():
        jps = cases.median([r.jobs_per_s for r in runs])
        ratio = paired_ratio([r.jobs_per_s for r in runs], base)
        lines.append(
            f"| {WORKER_LABELS[key]} | {jps:,.0f} | {ratio:.2f} | "
            f"{cases.median([r.worker_us_per_job for r in runs]):.1f} | "
            f"{cases.median([r.gearmand_us_per_job for r in runs]):.1f} | "
            f"{cases.median([r.rss_mib for r in runs]):.1f} |"
        )
    return [*lines, ""]


def _resize_rows(runs: int, jobs: int) -> list[str]:
    """The pool against N plain processes resizing at once, alternated round by round."""
    workload, _ = cases.resize_photo()
    procs = 2
    single = cases.median([cases.resize_in_process(workload, max(3, jobs // 3)) for _ in range(runs)])
    pooled: list[cases.PoolRun] = []
    plain: list[float] = []
    tuned: list[float] = []
    for _ in range(runs):
        pooled.append(cases.resize_worker(workload, procs, jobs))
        plain.append(cases.resize_plain_processes(workload, procs, jobs))
        tuned.append(cases.resize_plain_processes(workload, procs, jobs, tuned=True))
    rates = [r.images_per_s for r in pooled]
    rate = cases.median(rates)
    pool_ms = cases.median([r.pool_ms_per_image for r in pooled])
    over_ms = cases.median([r.overhead_ms_per_image for r in pooled])
    per_round = [a / b for a, b in zip(rates, plain, strict=True)]
    vs_plain = cases.median(per_round)
    per_round_tuned = [a / b for a, b in zip(rates, tuned, strict=True)]
    ratio = rate / (procs * single)
    return [
        _row(
            f"resize 12 MP, pool of {procs} via gearmand vs {procs} plain processes resizing at once (no Gearman), "
            "img/s",
            f"{rate:.2f}",
            f"{cases.median(plain):.2f}",
            vs_plain,
            f">= 0.95 ({_spread(per_round)})",
            vs_plain >= 0.95,
        ),
        _row(
            f"resize: the same vs {procs} plain processes that keep big buffers as the pool's do (mallopt)",
            f"{rate:.2f}",
            f"{cases.median(tuned):.2f}",
            cases.median(per_round_tuned),
            f"(reported: {_spread(per_round_tuned)})",
            None,
        ),
        _row(
            f"resize: the same vs {procs} x one process alone",
            f"{rate:.2f}",
            f"{procs} x {single:.2f}",
            ratio,
            "(reported)",
            None,
        ),
        _row(
            "resize: CPU ms per image outside the pool (worker main process + gearmand + client) / in the pool",
            f"{over_ms:.1f} / {pool_ms:.0f}",
            f"{1000 / single:.0f} ms in-process",
            over_ms / pool_ms,
            "(< 0.1)",
            over_ms / pool_ms < 0.1,
        ),
    ]


def _gearmand_version() -> str:
    from gearmand import binary

    return str(binary().version)


if __name__ == "__main__":
    main()
