"""The benchmark cases.  Each returns plain numbers; __main__ takes medians and prints them."""

from __future__ import annotations

import asyncio
import signal
import socket
import statistics
import time
from dataclasses import dataclass

import psutil

from gearworker.protocol import Magic, PacketType, Parser, encode_request

from .procs import cpu_seconds, fresh_gearmand, php, rss_bytes, running, start_workers, stop, wait_registered

#: The workload of a tiny job: 100 bytes.
PAYLOAD_BYTES = 100


@dataclass
class Throughput:
    jobs_per_s: float
    worker_us_per_job: float  # CPU of every worker process, per job
    gearmand_us_per_job: float
    rss_mib: float  # of all worker processes together


def throughput(kind: str, processes: int, in_flight: int, seconds: float) -> Throughput:
    """Foreground 100-byte echo jobs from one PHP client keeping ``in_flight`` tasks queued."""
    with running(kind, processes) as (gearmands, procs):
        g = gearmands[0]
        assert g.proc is not None
        pids = [p.pid for p in procs]
        php("load.php", g.address, "echo", PAYLOAD_BYTES, in_flight, 0.3)  # warm-up: connections, caches
        worker_cpu, server_cpu = cpu_seconds(pids), cpu_seconds([g.proc.pid])
        result = php("load.php", g.address, "echo", PAYLOAD_BYTES, in_flight, seconds)
        worker_cpu, server_cpu = cpu_seconds(pids) - worker_cpu, cpu_seconds([g.proc.pid]) - server_cpu
        rss = rss_bytes(pids)
    if result["bad"]:
        raise RuntimeError(f"{kind}: {result['bad']} jobs came back wrong")
    jobs = result["jobs"]
    return Throughput(jobs / result["seconds"], worker_cpu / jobs * 1e6, server_cpu / jobs * 1e6, rss / 2**20)


def latency(kind: str, count: int) -> list[float]:
    """Microseconds per foreground no-op job, one at a time (PHP doNormal in a loop)."""
    with running(kind, 1, function="noop") as (gearmands, _):
        return [float(x) for x in php("latency.php", gearmands[0].address, "noop", count, 200)["samples_us"]]


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# -- memory: 1000 async jobs in flight across 3 servers --------------------------------------------------------------


def _submit_background(address: str, function: bytes, workload: bytes, count: int) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"".join(encode_request(PacketType.SUBMIT_JOB_BG, function, b"", workload) for _ in range(count)))
        parser, created = Parser(expect=Magic.RES), 0
        while created < count:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("gearmand closed the connection")
            created += sum(p.type is PacketType.JOB_CREATED for p in parser.feed(data))


def memory(jobs: int = 10_000, servers: int = 3, sleep_s: float | None = None) -> tuple[float, float, int]:
    """(idle RSS MiB, peak RSS MiB while all jobs run, jobs seen running at once).

    The worker runs at its defaults (a job.done line per job) but for ``--concurrency``.
    """
    sleep_s = sleep_s if sleep_s is not None else max(4.0, jobs / 1000)  # long enough to get them all running
    extra = ["--concurrency", str(jobs + 100)]
    with running("gearworker-defaults", 1, servers=servers, function="sleep", extra=extra) as (gearmands, procs):
        pid = procs[0].pid
        time.sleep(0.3)
        idle = rss_bytes([pid])
        share = [jobs // servers + (i < jobs % servers) for i in range(servers)]
        for g, n in zip(gearmands, share, strict=True):
            _submit_background(g.address, b"sleep", str(sleep_s).encode(), n)
        peak, most = 0, 0
        deadline = time.monotonic() + sleep_s
        while time.monotonic() < deadline:
            now = sum(g.status().get("sleep", (0, 0, 0))[1] for g in gearmands)
            rss = rss_bytes([pid])
            if now >= most:
                most, peak = now, max(peak, rss)
            time.sleep(0.05)
    return idle / 2**20, peak / 2**20, most


# -- shutdown --------------------------------------------------------------------------------------------------------


def shutdown_time() -> float:
    """Seconds from SIGTERM to exit, for a gearworker with only idle connections."""
    g = fresh_gearmand()
    try:
        procs = start_workers("gearworker", [g.address])
        wait_registered(g, "echo", 1, procs)
        time.sleep(0.2)
        start = time.perf_counter()
        procs[0].send_signal(signal.SIGTERM)
        procs[0].wait(30)
        elapsed = time.perf_counter() - start
        stop(procs)
        return elapsed
    finally:
        g.stop()


# -- CPU jobs: resize through the pool vs in-process -----------------------------------------------------------------


def resize_photo() -> tuple[bytes, bytes]:
    """(the request workload for a 12 MP photo, the photo)."""
    import sys

    from .procs import ROOT

    sys.path.insert(0, str(ROOT / "tests"))
    from images import samples

    from gearworker.resize import pack_request

    photo = samples.jpeg(samples.photo(4000, 3000, seed=7), quality=92)
    return pack_request(photo, sizes=[2048, 1024, 512, 256], quality=85), photo


def resize_in_process(workload: bytes, jobs: int) -> float:
    """Images per second, one process, no Gearman: the handler's own speed on one core."""
    import os

    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    from gearworker.resize import Limits, run

    limits = Limits(storage_roots=())
    run(workload, limits)  # warm-up: libvips start-up
    start = time.perf_counter()
    for _ in range(jobs):
        run(workload, limits)
    return jobs / (time.perf_counter() - start)


_plain_workload = b""


def _plain_start(workload: bytes, tuned: bool) -> None:
    """Pool initializer: keep the photo in the process and resize it once (libvips start-up)."""
    from gearworker.procs import keep_big_buffers
    from gearworker.resize import Limits, run

    global _plain_workload
    if tuned:
        keep_big_buffers()
    _plain_workload = workload
    run(workload, Limits(storage_roots=()))


def _plain_resize(_: int) -> int:
    """One resize of the photo the process already holds; only the byte count travels back."""
    from gearworker.resize import Limits, run

    return len(run(_plain_workload, Limits(storage_roots=())))


def resize_plain_processes(workload: bytes, processes: int, jobs: int, *, tuned: bool = False) -> float:
    """Images per second with ``processes`` plain processes resizing at once: no Gearman, no transfer.

    Measured like the pool run, so that the two differ only by Gearman and the
    transfer: the same number of images handed out one at a time to whichever
    process is free, timed from the first hand-out to the last result.  (Each
    process timing its own images, with the rates summed, would leave out the
    end of a batch, where one process has finished and the other is still on
    its last image, which the pool's wall-clock figure always pays: with 12
    images that alone cost the pool up to 1/7.)

    What the machine itself allows: on this 2-vCPU VM two processes resizing at
    once each run ~1.4x slower than one alone, so N x the single rate is out of
    reach for anyone.

    ``tuned``: the processes keep big buffers as the pool's do
    (:func:`gearworker.procs.keep_big_buffers`); the target compares with
    plain processes as anyone would start them, this shows what is left of
    the pool's own cost once that gain is set aside.
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    os.environ["VIPS_CONCURRENCY"] = "1"  # inherited by the forkserver's children, as in the worker's pool
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_plain_start, initargs=(workload, tuned)
    ) as pool:
        list(pool.map(time.sleep, [0.5] * processes))  # every process started and warmed up, as the pool's are
        start = time.perf_counter()
        list(pool.map(_plain_resize, range(jobs)))
        return jobs / (time.perf_counter() - start)


@dataclass
class PoolRun:
    images_per_s: float
    pool_ms_per_image: float  # CPU of the pool processes: the resizing itself
    overhead_ms_per_image: float  # CPU of the worker's main process, gearmand and the client: the transfer


def resize_worker(workload: bytes, processes: int, jobs: int) -> PoolRun:
    """Images through gearmand and ``gearworker run --processes N``, 2 x N jobs in flight, with CPU per image."""
    from gearworker.client import Client

    extra = ["--processes", str(processes), "--handlers", "handlers"]
    with running("gearworker", 1, function="resize", extra=extra) as (gearmands, procs):
        address = gearmands[0].address
        assert gearmands[0].proc is not None
        parent = procs[0].pid
        overhead_pids = [parent, gearmands[0].proc.pid]

        async def go() -> PoolRun:
            async with Client([address]) as client:
                await asyncio.gather(*(client.submit("resize", workload) for _ in range(processes)))
                pool_pids = [p.pid for p in psutil.Process(parent).children(recursive=True)]
                left = list(range(jobs))

                async def feeder() -> None:
                    while left:
                        left.pop()
                        await client.submit("resize", workload)

                pool0, over0, me0 = cpu_seconds(pool_pids), cpu_seconds(overhead_pids), time.process_time()
                start = time.perf_counter()
                await asyncio.wait_for(asyncio.gather(*(feeder() for _ in range(2 * processes))), 300)
                elapsed = time.perf_counter() - start
                pool = cpu_seconds(pool_pids) - pool0
                over = cpu_seconds(overhead_pids) - over0 + time.process_time() - me0
                return PoolRun(jobs / elapsed, pool / jobs * 1e3, over / jobs * 1e3)

        return asyncio.run(go())


def median(values: list[float]) -> float:
    return statistics.median(values)
