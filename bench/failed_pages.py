"""How fast the console pages through a large failed-job store: one page, newest first, with and without filters.

    .venv/bin/python -m bench.failed_pages                       # 100,000 records in each store, in a temp dir
    .venv/bin/python -m bench.failed_pages --records 20000 --workload 4096 --keep /tmp/failed
    .venv/bin/python -m bench.failed_pages --api                 # also through the web app's GET /api/failed

Fills an sqlite store and a folder store with the same records (10 functions,
errors of a few kinds, 200-byte JSON workloads unless ``--workload``), then
times each query on a fresh query object (a new process would see the same):
the first page, a page deep in the set (by cursor), and pages filtered by
function, by text, by a time range and by all three, each with its total.
The folder store is timed twice: cold (the first filtered call reads every
file) and warm (what the web app answers once it has read them at start-up).
Times are the median of ``--runs`` runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sqlite3
import statistics
import tempfile
import time
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gearworker.failed import open_query
from gearworker.failed.query import FailedFilter
from gearworker.failed.query_folder import FolderQuery
from gearworker.failed.query_sqlite import SqliteQuery
from gearworker.failed.store import SqliteStore

FUNCTIONS = [f"fn{i}" for i in range(10)]
ERRORS = [
    "RuntimeError: payment service unreachable",
    "ValueError: card declined",
    "JobTimeout: took more than 30 s",
    "KeyError: 'customer'",
    "OSError: [Errno 28] No space left on device",
]
START = 1_700_000_000.0


def records(n: int, workload: int) -> list[tuple[Any, ...]]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        body = json.dumps({"order": i, "pad": "x" * max(0, workload - 30)}).encode()[:workload]
        error = f"{rng.choice(ERRORS)} (order {i})"
        out.append((START + i * 0.5, rng.choice(FUNCTIONS), f"H:gm:{i}", f"order-{i}", "gm:4730", error, 3, body))
    return out


def fill_sqlite(path: Path, rows: list[tuple[Any, ...]]) -> None:
    SqliteStore(path, workload_limit=1 << 20)  # the worker's schema
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO failed_jobs (failed_at, function, handle, unique_id, server, error, attempts, workload, "
            "workload_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*r, len(r[7])) for r in rows],
        )


def fill_folder(path: Path, rows: list[tuple[Any, ...]], *, exist_ok: bool = False) -> None:
    """The files FolderStore.add writes (same names and fields), without its fsyncs."""
    path.mkdir(parents=True, exist_ok=exist_ok)
    rng = random.Random()
    for failed_at, function, handle, unique, server, error, attempts, body in rows:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(failed_at))
        job_id = f"{stamp}-{rng.getrandbits(32):08x}"
        data = {
            "function": function,
            "handle": handle,
            "unique": unique,
            "error": error,
            "attempts": attempts,
            "workload": b64encode(body).decode(),
            "workload_size": len(body),
            "server": server,
            "failed_at": failed_at,
            "id": job_id,
        }
        (path / f"{job_id}.json").write_text(json.dumps(data, indent=1) + "\n")


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def cases(n: int) -> list[tuple[str, FailedFilter, bool]]:
    middle = START + n * 0.25
    return [
        ("first page, no filter", FailedFilter(), False),
        ("page at record ~n/2 (cursor), no filter", FailedFilter(), True),
        ("function", FailedFilter(function="fn3"), False),
        ("text in error or unique id (rare: 1 match)", FailedFilter(text=f"(order {n // 3})"), False),
        ("text (common: 20% match)", FailedFilter(text="card DECLINED"), False),
        ("time range (one hour)", FailedFilter(since=middle, until=middle + 3600), False),
        ("function + text + time", FailedFilter(function="fn3", text="declined", since=START, until=middle), False),
    ]


def run(query_of: Callable[[], Any], n: int, runs: int, label: str) -> None:
    for name, filt, deep in cases(n):
        query = query_of()
        cursor = None
        if deep:  # a cursor half way down, found once, outside the timing
            cursor = query.page(filt, limit=1, total=False).next
            mid = query.page(filt, limit=n // 2, total=False)
            cursor = mid.next or cursor
        ms, page = timed(lambda q=query, f=filt, c=cursor: q.page(f, cursor=c, limit=50), runs)
        print(f"| {label} | {name} | {ms:.1f} | {page.total} |")


def api(db: Path, folder: Path, n: int, runs: int) -> None:
    """The same pages through the web app's API (httpx in-process): query, JSON and the HTTP layers."""
    import asyncio

    import httpx

    from gearworker.web.app import ConsoleOptions, create_app

    async def measure(store: Path, label: str) -> None:
        with tempfile.TemporaryDirectory() as photos:
            app = create_app(["127.0.0.1:1"], storage_root=photos, console=ConsoleOptions(failed_jobs=str(store)))
            query = app.state.console.query
            if isinstance(query, FolderQuery):
                await asyncio.to_thread(query.warm)  # what the app does at start-up
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
                for name, params in (
                    ("first page", {}),
                    ("function", {"function": "fn3"}),
                    ("text (rare)", {"q": f"(order {n // 3})"}),
                    ("function + text + since", {"function": "fn3", "q": "declined", "since": str(START)}),
                ):
                    times = []
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        r = await client.get("/api/failed", params={**params, "limit": "50"})
                        times.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200, r.text
                    ms, total = statistics.median(times), r.json()["total"]
                    print(f"| {label}, GET /api/failed | {name} | {ms:.1f} | {total} |")
            await app.state.web.close()

    async def both() -> None:
        await measure(db, "sqlite")
        await measure(folder, "folder (warm)")

    asyncio.run(both())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--workload", type=int, default=200, help="workload bytes per record")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", metavar="DIR", help="build the stores here and keep them")
    parser.add_argument("--api", action="store_true", help="also time the pages through the web app's API")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="failed-pages-"))
    root.mkdir(parents=True, exist_ok=True)
    db, folder = root / "failed.db", root / "failed"
    rows = records(args.records, args.workload)
    if not db.exists():
        t0 = time.perf_counter()
        fill_sqlite(db, rows)
        print(f"filled {db} in {time.perf_counter() - t0:.1f} s ({db.stat().st_size / 1e6:.1f} MB)")
    if not folder.exists():
        t0 = time.perf_counter()
        fill_folder(folder, rows)
        print(f"filled {folder} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    open_query(db).count(FailedFilter())  # creates the indexes once
    print(f"sqlite indexes created in {time.perf_counter() - t0:.2f} s")
    print(f"\n{args.records} records, {args.workload}-byte workloads, median of {args.runs} runs, ms\n")
    print("| store | query (50 per page, with its total) | ms | total |")
    print("|---|---|---|---|")
    n = args.records
    run(lambda: SqliteQuery(db), n, args.runs, "sqlite")
    warm = FolderQuery(folder)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    warm.warm()
    warm_s = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(lambda: warm, n, args.runs, "folder (warm)")
    extra = iter(records(args.runs * 2, args.workload))

    def one_more(filt: FailedFilter) -> Any:  # a worker wrote a record since: the folder is listed again
        fill_folder(folder, [next(extra)], exist_ok=True)
        return warm.page(filt, limit=50)

    for name, filt in (("first page, no filter", FailedFilter()), ("function", FailedFilter(function="fn3"))):
        ms, page = timed(lambda f=filt: one_more(f), args.runs)
        print(f"| folder (warm, a record added since) | {name} | {ms:.1f} | {page.total} |")
    cold_ms, _ = timed(lambda: FolderQuery(folder).page(FailedFilter(function="fn3"), limit=50), 1)
    print(f"| folder (cold) | function: first call reads every file | {cold_ms:.0f} | |")
    cold_plain, _ = timed(lambda: FolderQuery(folder).page(FailedFilter(), limit=50), 1)
    print(f"| folder (cold) | first page, no filter | {cold_plain:.1f} | |")
    if args.api:
        api(db, folder, n, args.runs)
    print(f"\nfolder warm-up (read {n} files): {warm_s:.1f} s; peak RSS grew {(rss1 - rss0) / 1024:.0f} MiB")
    if args.keep:
        print(f"(stores kept in {root})")
    else:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
