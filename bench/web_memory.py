"""The web app's memory under many pages of jobs: what it holds while busy, and once they are old.

    .venv/bin/python -m bench.web_memory                    # 100 pages x 100 echo jobs, 3 KB results
    .venv/bin/python -m bench.web_memory --age 20           # age limits cut to 20 s, to see them act
    .venv/bin/python -m bench.web_memory --app-root DIR     # the web app of another checkout (a before/after)

One gearmand and one worker (``echo``) serve a web app process.  Each page is
what a browser tab does: it opens its event stream, posts one form of
``--jobs`` copies with a payload of ``--result-bytes`` (echo sends it back),
reads its events until every row has ended, and closes.  ``--parallel``
pages run at a time.  Printed: the web app's resident memory (RSS) at idle,
after the pages, after ``--settle`` quiet seconds, and, with ``--age``, once
the age limits (events a page may catch up on, ended job rows) have passed:
the process is started with them cut to ``--age`` seconds and its sweep every
second, so the wait is short.  ``--app-root`` runs the web app from another
tree (``git archive REV | tar -x -C DIR``), whose code may not know these
limits: they are then simply not there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gearmand import Gearmand, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench"
FINAL = {"done", "failed", "cancelled", "lost", "finished", "unknown"}
# The web app, with its age limits cut short when asked (module globals, read when they are used).
BOOT = """
import sys
age = float(sys.argv[1])
if age > 0:
    import gearworker.web.events as events, gearworker.web.jobs as jobs, gearworker.web.state as state
    events.EVENT_TTL = events.SESSION_TTL = jobs.ENDED_ROW_TTL = age
    state.SWEEP_INTERVAL = 1.0
from gearworker.app.launch import main
raise SystemExit(main(sys.argv[2:]))
"""


def rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


async def page(base: str, n: int, jobs: int, payload: str) -> None:
    """One tab: its stream open, one form of ``jobs`` copies, until every row has ended."""
    session = f"benchpage{n:08d}"
    async with httpx.AsyncClient(
        base_url=base, cookies={"gw_csrf": TOKEN}, headers={"x-csrf-token": TOKEN}, timeout=120
    ) as client:
        ended: set[str] = set()
        all_ended = asyncio.Event()

        async def listen() -> None:
            async with client.stream("GET", f"/api/events?session={session}") as stream:
                event = ""
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "job":
                        row = json.loads(line[6:])
                        if row["state"] in FINAL:
                            ended.add(row["id"])
                            if len(ended) == jobs:
                                all_ended.set()
                                return

        listener = asyncio.ensure_future(listen())
        await asyncio.sleep(0.05)  # the stream is open before the form is sent, as on a page
        r = await client.post(
            f"/api/jobs?session={session}", json={"function": "echo", "payload": payload, "copies": jobs}
        )
        r.raise_for_status()
        await asyncio.wait_for(all_ended.wait(), 120)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def pages(base: str, count: int, jobs: int, payload: str, parallel: int) -> None:
    limit = asyncio.Semaphore(parallel)

    async def one(n: int) -> None:
        async with limit:
            await page(base, n, jobs, payload)

    await asyncio.gather(*(one(n) for n in range(count)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=100, help="jobs per page (one form, that many copies)")
    parser.add_argument("--result-bytes", type=int, default=3000)
    parser.add_argument("--parallel", type=int, default=4, help="pages at a time")
    parser.add_argument("--settle", type=float, default=5.0, help="quiet seconds before the second reading")
    parser.add_argument("--age", type=float, default=0.0, help="cut the age limits to this many seconds (0: as set)")
    parser.add_argument("--app-root", type=Path, default=ROOT, help="the tree whose web app is measured")
    args = parser.parse_args()
    app_root = args.app_root.resolve()
    g = Gearmand().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEARWORKER_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "gearworker", "--server", g.address, "--handlers", "handlers"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    folder = Path(tempfile.mkdtemp(prefix="web-memory-"))
    settings = folder / "settings.py"
    settings.write_text("WEB_RATE_LIMIT = 10_000_000\n")  # the bench is one client posting 10,000 jobs
    port = free_port()
    web_cmd = ["web", "--port", str(port), "--server", g.address, "--settings", str(settings)]
    web = subprocess.Popen(
        [sys.executable, "-c", BOOT, str(args.age), *web_cmd, "--storage-root", str(folder / "photos")],
        cwd=app_root,
        env={**env, "PYTHONPATH": str(app_root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    readings: list[tuple[str, float]] = []
    try:
        while not g.status().get("echo", (0, 0, 0))[2]:
            time.sleep(0.1)
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        asyncio.run(pages(base, 1, 10, "warm", 1))  # imports, the client's connection: not what is measured
        time.sleep(1)
        readings.append(("idle, after one small page", rss_mib(web.pid)))
        started = time.monotonic()
        asyncio.run(pages(base, args.pages, args.jobs, "x" * args.result_bytes, args.parallel))
        took = time.monotonic() - started
        readings.append((f"after {args.pages} pages x {args.jobs} jobs ({took:.0f} s)", rss_mib(web.pid)))
        time.sleep(args.settle)
        readings.append((f"{args.settle:g} s later", rss_mib(web.pid)))
        if args.age:
            time.sleep(args.age + 3)
            readings.append((f"past the age limit ({args.age:g} s) and a sweep", rss_mib(web.pid)))
    finally:
        web.terminate()
        web.wait(20)
        worker.terminate()
        worker.wait(30)
        g.stop()
    print(f"web app from {app_root}; {args.result_bytes}-byte results, {args.parallel} pages at a time")
    for label, mib in readings:
        print(f"  {label:<52} {mib:7.1f} MiB RSS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
