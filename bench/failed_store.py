"""How fast worker processes write failed-job records to one shared store, and what it costs their event loops.

    .venv/bin/python -m bench.failed_store                        # 3 processes, sqlite, 20,000 records each
    .venv/bin/python -m bench.failed_store --store folder --records 3000
    .venv/bin/python -m bench.failed_store --mode per-record      # the old way, for comparison

Each process runs a uvloop event loop the way a worker does: ``--in-flight``
failed jobs (default 100, the default ``concurrency``) each await their
record (``RecordWriter.write``: durable before the failure is reported), and
a new one starts as each ends.  The processes start together (a shared start
time) on one store in a fresh temporary folder; records/s is every record of
every process over the span from the first start to the last end.

Event-loop blocking: a ticker task in each process sleeps 1 ms again and
again and notes how late each wake-up is.  A control process runs the same
ticker at the same time with nothing else to do: on a shared 2-core machine
its lateness is what the machine's load costs any loop, so what the writes
add is the difference.  ``--store none`` (ids handed back without a write)
shows the loop's own share: resuming the jobs whose records are done.
Printed: p50, p99 and max lateness per process.

``--mode per-record`` is the writer before: each record through the
default thread pool, a connection opened and committed per record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _lateness(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


async def _ticker(stop: asyncio.Event, samples: list[float]) -> None:
    # perf_counter, not loop.time(): uvloop's clock moves in whole milliseconds.
    while not stop.is_set():
        due = time.perf_counter() + 0.001
        await asyncio.sleep(0.001)
        samples.append(max(0.0, time.perf_counter() - due))


async def _child(store_path: str, records: int, in_flight: int, start_at: float, mode: str) -> dict[str, Any]:
    from gearworker.failed import FailedJob, open_store
    from gearworker.failed.writer import RecordWriter

    store: Any = _Nowhere() if store_path == "none" else open_store(store_path)
    writer = RecordWriter(store)
    loop = asyncio.get_running_loop()
    while time.time() < start_at:
        await asyncio.sleep(min(0.01, max(0.0, start_at - time.time())))
    busy: list[float] = []
    stop = asyncio.Event()
    ticking = asyncio.create_task(_ticker(stop, busy))
    pid = str(__import__("os").getpid())
    workload = b"x" * 100
    queue = iter(range(records))
    waits: list[float] = []

    async def one_job_after_another() -> None:
        for i in queue:
            job = FailedJob("bench", f"H:{pid}:{i}", f"{pid}-{i}", "RuntimeError: bench", 1, workload, len(workload))
            t0 = loop.time()
            if mode == "batched":
                await writer.write(job)
            else:
                await loop.run_in_executor(None, store.add, job)
            waits.append(loop.time() - t0)

    started = time.time()
    await asyncio.gather(*(one_job_after_another() for _ in range(in_flight)))
    ended = time.time()
    stop.set()
    await ticking
    await writer.close()
    return {
        "started": started,
        "ended": ended,
        "records": records,
        "batches": writer.batches,
        "busy": _lateness(busy),
        "record_wait_p50_ms": round(statistics.median(waits) * 1000, 2),
    }


class _Nowhere:
    """A store that writes nothing: what is left is the event loop's own share of a record."""

    def writer(self) -> _Nowhere:
        return self

    def write(self, jobs: list[Any]) -> list[str]:
        time.sleep(0.0005)  # a commit's worth of waiting, so batches form as they do on disk
        return [str(i) for i in range(len(jobs))]

    def close(self) -> None:
        pass


async def _control(start_at: float) -> dict[str, Any]:
    """The ticker alone, from ``start_at`` until stdin closes (the writers are done)."""
    while time.time() < start_at:
        await asyncio.sleep(min(0.01, max(0.0, start_at - time.time())))
    samples: list[float] = []
    stop = asyncio.Event()
    ticking = asyncio.create_task(_ticker(stop, samples))
    await asyncio.to_thread(sys.stdin.read)
    stop.set()
    await ticking
    return {"busy": _lateness(samples)}


def _run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="gw-failed-bench-"))
    path = folder / ("failed.db" if args.store == "sqlite" else "failed")
    try:
        from gearworker.failed import open_store

        if args.store == "none":
            path = Path("none")
        else:
            open_store(path)  # the table (or folder) exists before the processes race to it
        start_at = time.time() + 2.0  # after every child's idle second
        procs = [
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "bench.failed_store", "--child", str(path)),
                    *("--records", str(args.records), "--in-flight", str(args.in_flight)),
                    *("--start-at", repr(start_at), "--mode", args.mode),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(args.processes)
        ]
        control = subprocess.Popen(
            [sys.executable, "-m", "bench.failed_store", "--control", "--start-at", repr(start_at)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        results = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
        control_result = json.loads(control.communicate("", timeout=60)[0])
        stored = {"folder": lambda: len(open_store(path).list()), "sqlite": lambda: _count(path)}.get(
            args.store, lambda: 0
        )()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    span = max(r["ended"] for r in results) - min(r["started"] for r in results)
    total = sum(r["records"] for r in results)
    return {
        "records": total,
        "stored": stored,
        "seconds": round(span, 2),
        "per_s": round(total / span),
        "procs": results,
        "control": control_result,
    }


def _count(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM failed_jobs").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--records", type=int, default=20000, help="per process")
    parser.add_argument("--in-flight", type=int, default=100, help="failed jobs awaiting their record, per process")
    parser.add_argument(
        "--store",
        choices=["sqlite", "folder", "none"],
        default="sqlite",
        help="none: ids handed back without a write (the event loop's own share)",
    )
    parser.add_argument("--mode", choices=["batched", "per-record"], default="batched")
    parser.add_argument("--child", metavar="STORE", help=argparse.SUPPRESS)
    parser.add_argument("--control", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.control:
        import uvloop

        print(json.dumps(uvloop.run(_control(args.start_at))))
        return
    if args.child:
        import uvloop

        print(json.dumps(uvloop.run(_child(args.child, args.records, args.in_flight, args.start_at, args.mode))))
        return
    out = _run(args)
    print(
        f"{args.processes} processes, {args.store}, {args.mode}: {out['records']:,} records "
        f"({out['stored']:,} stored) in {out['seconds']} s = {out['per_s']:,} records/s"
    )

    def late(r: dict[str, Any]) -> str:
        return f"{r['busy']['p50_ms']}/{r['busy']['p99_ms']}/{r['busy']['max_ms']} ms"

    print(f"  1 ms ticker lateness p50/p99/max: control process (no writes) {late(out['control'])}")
    for i, r in enumerate(out["procs"]):
        print(
            f"  writer {i + 1}: {late(r)}; {r['batches']} batches, a job's wait for its record p50 "
            f"{r['record_wait_p50_ms']} ms"
        )


if __name__ == "__main__":
    main()
