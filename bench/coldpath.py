"""A lone job's two wakes, timed in-process with the CPU caches emptied first: an A/B of checkouts.

    .venv/bin/python -m bench.coldpath                              # this checkout
    git worktree add /tmp/gw-base HEAD~1
    .venv/bin/python -m bench.coldpath --tree /tmp/gw-base --tree .  # the change, against the one before it

``bench.reaction`` traces the real thing (sockets, gearmand, the scheduler),
and its rounds move by a few microseconds: more than one call fewer saves.
This takes the socket and the machine's other work out.  A real
:class:`PacketStream` (:func:`bench.hotpath.one_connection`: parser, session,
worker, runner, a no-op handler, encoder) is fed the NOOP that wakes a
sleeping worker, then the JOB_ASSIGN_UNIQ of a no-op job, as gearmand sends
them, and each is timed from the call of ``data_received`` to the write of
its answer (the grab, the result).  Before each feed ``--evict-mib`` MiB are
written over, so the worker's code and data have left the caches, as after a
quiet millisecond on a busy machine (harsher: nothing of it stays in the
last-level cache either).  Each checkout runs in its own process, alternated
round by round (A B, then B A); printed are the medians of the rounds'
medians and the medians of the rounds' differences from the first checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


async def _samples(count: int, evict_mib: int) -> dict[str, list[float]]:
    """Microseconds from each wake's read to its answer's write, ``count`` lone jobs."""
    from gearworker import config, logs
    from gearworker.metrics import NO_METRICS
    from gearworker.protocol import Magic, Packet, PacketType, encode

    try:
        from gearworker.worker.dispatch import Worker
    except ImportError:  # a checkout from before the worker/ split
        from gearworker.worker.worker import Worker  # type: ignore[import-not-found,no-redef]
    from gearworker.worker.registry import discover

    from .hotpath import HANDLERS, one_connection

    logs.configure("info", "json", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the whole run
    settings = config.load(None, env={}, overrides={"servers": ["127.0.0.1:1"], "handlers_dir": str(HANDLERS)})
    _, session, stream, transport = one_connection(Worker(settings, discover(HANDLERS), None, metrics=NO_METRICS))
    no_job = encode(Packet(PacketType.NO_JOB, (), Magic.RES))
    noop = encode(Packet(PacketType.NOOP, (), Magic.RES))
    written = 0

    def write(data: bytes) -> None:
        nonlocal written
        if not written:
            written = time.perf_counter_ns()

    transport.write = write  # type: ignore[method-assign]
    junk, patterns = bytearray(evict_mib << 20), (b"\x55" * (evict_mib << 20), b"\xaa" * (evict_mib << 20))
    found: dict[str, list[float]] = {"noop": [], "job": []}
    await asyncio.sleep(0)
    stream.data_received(no_job)  # the first probe's answer: asleep
    for i in range(count + 20):  # the first 20 untimed: first-time costs are not per job
        job = encode(Packet(PacketType.JOB_ASSIGN_UNIQ, (b"H:host:%d" % i, b"noop", b"", b""), Magic.RES))
        for name, data in (("noop", noop), ("job", job)):
            junk[:] = patterns[i % 2]  # written over: the caches now hold this, not the worker
            written = 0
            start = time.perf_counter_ns()
            stream.data_received(data)
            if i >= 20 and written:
                found[name].append((written - start) / 1000)
            await asyncio.sleep(0)
        await asyncio.sleep(0.001)  # the job's Task ends, and now and then the batch of its log line runs
        while session.grabs:  # the probe's other grabs come back empty, as from gearmand: asleep again
            stream.data_received(no_job)
    return found


def _child(tree: str, count: int, evict_mib: int) -> None:
    import uvloop

    sys.path.insert(0, tree)  # this checkout's gearworker; bench's own code stays this one's
    import gearworker

    assert Path(gearworker.__file__).resolve().is_relative_to(Path(tree).resolve()), gearworker.__file__
    print(json.dumps(uvloop.run(_samples(count, evict_mib))))


def measure(tree: str, count: int, evict_mib: int) -> dict[str, list[float]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.coldpath",
            "--child",
            str(Path(tree).resolve()),
            "--jobs",
            str(count),
            "--evict-mib",
            str(evict_mib),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, list[float]] = json.loads(out.stdout)
    return result


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.coldpath", description=__doc__.split("\n")[0])
    p.add_argument("--tree", action="append", help="a checkout of gearworker (default: this one); repeat to compare")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--jobs", type=int, default=300, help="lone jobs a round")
    p.add_argument("--evict-mib", type=int, default=16)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child, args.jobs, args.evict_mib)
        return
    trees = args.tree or [str(ROOT)]
    rounds: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    for n in range(args.rounds):
        for tree in trees if n % 2 == 0 else trees[::-1]:
            found = measure(tree, args.jobs, args.evict_mib)
            rounds[tree].append({name: statistics.median(v) for name, v in found.items()})
    print(
        f"lone no-op jobs in-process, {args.jobs} a round, {args.evict_mib} MiB written over before each wake, "
        f"{args.rounds} alternated rounds: us from data_received to the answer's write (medians of the rounds' "
        f"medians; differences from {trees[0]}: medians of the rounds' differences)\n"
    )
    print("| checkout | NOOP -> grab | difference | job -> result | difference |")
    print("|---|---|---|---|---|")

    def med(tree: str, name: str) -> float:
        return statistics.median(r[name] for r in rounds[tree])

    def diff(tree: str, name: str) -> float:
        return statistics.median(a[name] - b[name] for a, b in zip(rounds[tree], rounds[trees[0]], strict=True))

    for tree in trees:
        row: list[Any] = [med(tree, "noop"), diff(tree, "noop"), med(tree, "job"), diff(tree, "job")]
        print(f"| {tree} | {row[0]:.1f} | {row[1]:+.1f} | {row[2]:.1f} | {row[3]:+.1f} |")


if __name__ == "__main__":
    main()
