"""Submit throughput: gearworker's Client beside PHP's GearmanClient, against the same worker, in one run.

Each round starts a fresh gearmand (``--threads=0``) and a fresh worker, then
runs every client on it in turn: N foreground echo jobs of a small payload,
K in flight, every result checked.  The table shows medians of the rounds.

    .venv/bin/python bench/client_bench.py                 # gearworker's own worker
    .venv/bin/python bench/client_bench.py --worker php    # tests/php/worker.php instead

Client CPU is the client process's user+system time per job (the PHP client
runs as a child process and reports its own getrusage()).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gearmand import Gearmand  # noqa: E402

from gearworker.client import Client  # noqa: E402

PHP_CLIENT = ROOT / "tests" / "php" / "bench_client.php"
PHP_WORKER = ROOT / "tests" / "php" / "worker.php"


def payload(i: int, size: int) -> bytes:
    return f"job-{i}|".encode().ljust(size, b"x")


async def run_ours(address: str, function: str, jobs: int, inflight: int, size: int) -> tuple[float, float, int]:
    """K coroutines share one Client, each submitting its share of the jobs one after another."""
    ok = 0
    async with Client([address]) as client:
        assert await client.submit(function, b"warm-up") == b"warm-up"

        async def lane(start: int) -> None:
            nonlocal ok
            for i in range(start, jobs, inflight):
                data = payload(i, size)
                if await client.submit(function, data) == data:
                    ok += 1

        cpu, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(lane(k) for k in range(inflight)))
        return time.perf_counter() - t0, time.process_time() - cpu, ok


def run_php(address: str, function: str, jobs: int, inflight: int, size: int) -> tuple[float, float, int]:
    out = subprocess.run(
        ["php", str(PHP_CLIENT), address, function, str(jobs), str(inflight), str(size)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    elapsed, cpu, ok = out.stdout.split()
    return float(elapsed), float(cpu), int(ok)


def start_worker(kind: str, g: Gearmand) -> tuple[subprocess.Popen[bytes], str]:
    if kind == "php":
        proc = subprocess.Popen(["php", str(PHP_WORKER), g.address], stdout=subprocess.DEVNULL)
        function = "php.echo"
    else:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gearworker",
                "--server",
                g.address,
                "--handlers",
                str(ROOT / "handlers"),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        function = "echo"
    deadline = time.monotonic() + 30
    while g.status().get(function, (0, 0, 0))[2] < 1:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"the {kind} worker did not register {function}")
        time.sleep(0.05)
    return proc, function


CLIENTS = ("gearworker Client (uvloop)", "gearworker Client (asyncio loop)", "PHP GearmanClient (addTask+runTasks)")


PerClient = dict[str, list[float]]


def compare(
    jobs: int,
    inflight: int,
    size: int,
    rounds: int,
    worker_kind: str = "gearworker",
    clients: tuple[str, ...] = (CLIENTS[0], CLIENTS[2]),
) -> tuple[PerClient, PerClient]:
    """(jobs/s, client CPU us per job) of each client per round; each round runs them back to back on a fresh
    gearmand and worker."""
    import uvloop

    runners: dict[str, Callable[[str, str], tuple[float, float, int]]] = {
        CLIENTS[0]: lambda a, f: uvloop.run(run_ours(a, f, jobs, inflight, size)),
        CLIENTS[1]: lambda a, f: asyncio.run(run_ours(a, f, jobs, inflight, size)),
        CLIENTS[2]: lambda a, f: run_php(a, f, jobs, inflight, size),
    }
    rates: dict[str, list[float]] = {name: [] for name in clients}
    cpus: dict[str, list[float]] = {name: [] for name in clients}
    for round_ in range(rounds):
        g = Gearmand(threads=0).start()
        worker, function = start_worker(worker_kind, g)
        try:
            for name in clients:
                elapsed, cpu, ok = runners[name](g.address, function)
                if ok != jobs:
                    raise SystemExit(f"{name}: only {ok} of {jobs} results were right")
                rates[name].append(jobs / elapsed)
                cpus[name].append(cpu / jobs * 1e6)
                print(f"client round {round_ + 1}: {name}: {jobs / elapsed:,.0f} jobs/s", file=sys.stderr)
        finally:
            worker.terminate()
            worker.wait(30)
            g.stop()
    return rates, cpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--size", type=int, default=100, help="payload bytes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", choices=["gearworker", "php"], default="gearworker")
    args = ap.parse_args()

    rates, cpus = compare(args.jobs, args.inflight, args.size, args.rounds, args.worker, CLIENTS)
    php = statistics.median(rates["PHP GearmanClient (addTask+runTasks)"])
    print(
        f"\n{args.jobs} foreground echo jobs of {args.size} bytes, {args.inflight} in flight, "
        f"{args.worker} worker, gearmand --threads=0; medians of {args.rounds} rounds\n"
    )
    print("| client | jobs/s | vs PHP | client CPU per job |")
    print("|---|---|---|---|")
    for name in CLIENTS:
        rate = statistics.median(rates[name])
        print(f"| {name} | {rate:,.0f} | {rate / php:.2f} | {statistics.median(cpus[name]):.1f} us |")


if __name__ == "__main__":
    main()
