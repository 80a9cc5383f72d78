"""How a burst of slow jobs is shared by two idle workers, by grab_pipeline.

    .venv/bin/python -m bench.burst_share              # 4 rounds of 8, 16 and 32, alternated
    .venv/bin/python -m bench.burst_share --rounds 2 --jobs 32

Two workers at their defaults (but ``GEARWORKER_GRAB_PIPELINE``) sleep on one
gearmand; a client submits ``--jobs`` background jobs of 0.3 s at once; each
worker's log file says how many it ran.  An even split is half each.  A deep
pipeline could let the first worker to wake take the whole burst; the probe
(one grab after a quiet spell, doubling while every grab brings a job) is
what keeps this from depending on the depth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gearworker.client import Client

from .procs import BENCH, fresh_gearmand, wait_registered


def one_round(pipeline: int, jobs: int) -> list[int]:
    """Jobs each of the two workers ran."""
    g = fresh_gearmand()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = [Path(tmp) / f"worker{i}.log" for i in range(2)]
        try:
            env = dict(os.environ, GEARWORKER_GRAB_PIPELINE=str(pipeline))
            for log in logs:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "gearworker",
                            "run",
                            "--handlers",
                            str(BENCH / "handlers"),
                            "--server",
                            g.address,
                            "--log-file",
                            str(log),
                        ],
                        env=env,
                        stderr=subprocess.DEVNULL,
                    )
                )
            wait_registered(g, "sleep", 2, procs)

            async def burst() -> None:
                async with Client([g.address]) as client:
                    await asyncio.gather(*(client.submit_background("sleep", b"0.3") for _ in range(jobs)))

            asyncio.run(burst())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                counts = [log.read_text().count('"job.done"') if log.exists() else 0 for log in logs]
                if sum(counts) >= jobs:
                    return counts
                time.sleep(0.2)
            raise RuntimeError(f"only {counts} of {jobs} jobs ran")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait()
            g.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.burst_share", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--jobs", type=int, default=64)
    args = p.parse_args()
    depths = (8, 16, 32)
    smaller: dict[int, list[int]] = {d: [] for d in depths}
    for _ in range(args.rounds):
        for depth in depths:  # alternated
            smaller[depth].append(min(one_round(depth, args.jobs)))
    print(
        f"{args.jobs} background jobs of 0.3 s at once, two idle workers; the smaller worker's share, "
        f"{args.rounds} alternated rounds (an even split is {args.jobs // 2}):\n"
    )
    print("| grab_pipeline | smaller share per round | median |")
    print("|---|---|---|")
    for depth in depths:
        print(f"| {depth} | {', '.join(map(str, smaller[depth]))} | {statistics.median(smaller[depth]):g} |")


if __name__ == "__main__":
    main()
