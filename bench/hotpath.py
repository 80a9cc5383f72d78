"""The worker's hot path in one process, without sockets: CPU per job that a noisy machine cannot blur.

    .venv/bin/python -m bench.hotpath                  # 200,000 echo jobs in batches of 20
    .venv/bin/python -m bench.hotpath --batch 1        # one job per read: the latency path
    .venv/bin/python -m bench.hotpath --no-metrics     # without the Prometheus bookkeeping
    .venv/bin/python -m bench.hotpath --profile        # cProfile, top functions by own time
    .venv/bin/python -m bench.instructions             # the same under valgrind: instructions per job

Bytes of ``--batch`` JOB_ASSIGN_UNIQ packets are fed to a real
:class:`PacketStream` (parser, worker, tasks, handler, encoder) whose
transport only counts what is written.  Numbers are process CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import uvloop

from gearworker import config, logs
from gearworker.metrics import NO_METRICS, MetricsSink
from gearworker.protocol import Magic, Packet, PacketType, WorkerSession, encode, registration
from gearworker.transport import Endpoint, PacketStream, StreamOptions
from gearworker.worker.dispatch import Worker
from gearworker.worker.registry import discover
from gearworker.worker.runner import ActiveJob

HANDLERS = Path(__file__).resolve().parent / "handlers"


class CountingTransport:
    """Stands in for the socket: counts writes and bytes."""

    def __init__(self) -> None:
        self.writes = 0
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.bytes += len(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def one_connection(worker: Worker) -> tuple[Worker, WorkerSession[ActiveJob], PacketStream, CountingTransport]:
    """``worker`` with one connection of its first group up, over a :class:`CountingTransport`."""
    group = worker.groups[0]
    options = StreamOptions(max_packet_size=1 << 20)
    session: WorkerSession[ActiveJob] = WorkerSession(
        b"bench", registration(group.timeouts), depth=worker.settings.grab_pipeline
    )
    try:
        from gearworker.worker.connection import GroupConnection

        conn = GroupConnection(worker, group, Endpoint("127.0.0.1:1", options), session)
        stream = PacketStream(conn, options, woken=conn.woken)
    except ImportError:  # a checkout from before the worker/ split (bench.coldpath --tree)
        from gearworker.worker.worker import Connection  # type: ignore[import-not-found]

        conn = Connection(worker, group, Endpoint("127.0.0.1:1", options), session)
        stream = PacketStream(conn, options)
    worker.connections.append(conn)
    transport = CountingTransport()
    stream.connection_made(transport)  # type: ignore[arg-type]
    conn.up(stream)
    return worker, session, stream, transport


async def run(
    jobs: int,
    batch: int,
    grab_pipeline: int,
    metrics: bool,
    log_level: str = "warning",
) -> tuple[float, float]:
    """Return (CPU us per job, writes per job).  Log lines go to /dev/null (a write per loop turn)."""
    logs.configure(log_level, "json", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the whole run
    settings = config.load(
        None, env={}, overrides={"servers": ["127.0.0.1:1"], "handlers_dir": str(HANDLERS), "concurrency": 1000}
    )
    settings.grab_pipeline = grab_pipeline
    meter: MetricsSink = NO_METRICS
    if metrics:
        from gearworker.metrics.prometheus import Metrics

        meter = Metrics()
    _, session, stream, transport = one_connection(Worker(settings, discover(HANDLERS), None, metrics=meter))
    await asyncio.sleep(0)
    data = b"".join(
        encode(Packet(PacketType.JOB_ASSIGN_UNIQ, (b"H:host:%d" % i, b"echo", b"", b"x" * 100), Magic.RES))
        for i in range(batch)
    )
    writes = transport.writes
    start = time.process_time()
    for _ in range(jobs // batch):
        session.grabs = max(session.grabs, batch)  # as if gearmand answered grabs we had sent
        stream.data_received(data)
        await asyncio.sleep(0)  # the jobs' tasks run
        await asyncio.sleep(0)  # their results are flushed
    elapsed = time.process_time() - start
    done = jobs // batch * batch
    return elapsed / done * 1e6, (transport.writes - writes) / done


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=20, help="jobs per read")
    p.add_argument("--grab-pipeline", type=int, default=8)
    p.add_argument("--no-metrics", action="store_true")
    p.add_argument("--log-level", default="warning", help="info: the default, one job.done line per job")
    p.add_argument("--profile", action="store_true")
    p.add_argument(
        "--after-delay",
        type=float,
        default=None,
        help="seconds the Runner's batch of after-hooks waits (default: the worker's own, 0.02)",
    )
    args = p.parse_args()
    if args.after_delay is not None:
        from gearworker.worker import chain

        chain.AFTER_DELAY = args.after_delay  # read at each batch's start
    coro = run(args.jobs, args.batch, args.grab_pipeline, not args.no_metrics, args.log_level)
    if args.profile:
        import cProfile
        import pstats

        with cProfile.Profile() as prof:
            us, writes = uvloop.run(coro)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    else:
        us, writes = uvloop.run(coro)
    print(
        f"{us:.2f} us CPU per job, {writes:.3f} writes per job (batch {args.batch}, "
        f"metrics {'off' if args.no_metrics else 'on'}, log {args.log_level}"
        f"{', under cProfile' if args.profile else ''})"
    )


if __name__ == "__main__":
    main()
