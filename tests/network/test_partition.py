"""Partitions and NATs: the worker's connections lose their packets for a while, or are forgotten when idle."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from netlab import Lab, figure
from support import wait_until

from gearworker import Client

DETECTION = 30.0  # seconds: with default settings a dead connection is detected within this (heartbeat 10+10 s)


def test_partition_and_heal_loses_nothing(lab: Lab) -> None:
    """Worker cut off from gearmand both ways for 20 s, then healed, default settings: every background job
    submitted before, during and after runs; a job runs twice only if its first run ended inside the partition
    (its WORK_COMPLETE was lost: at-least-once); the number of such re-runs is reported."""
    g = lab.gearmand()
    worker = lab.worker([g.address]).start(wait_for="net_slow", gearmand=g)
    ids = [f"job-{i}" for i in range(30)]

    async def scenario() -> tuple[float, float]:
        async with Client([g.client_address]) as client:  # clients are not cut off: only the worker
            for uid in ids[:10]:
                await client.submit_background("net_slow", b"0.5", unique=uid)
            await asyncio.sleep(0.7)  # some are running when the partition starts
            lab.netns.partition(g.port)
            cut = time.monotonic()
            for uid in ids[10:20]:
                await client.submit_background("net_slow", b"0.5", unique=uid)
                await asyncio.sleep(1.9)
            lab.netns.heal()
            healed = time.monotonic()
            for uid in ids[20:]:
                await client.submit_background("net_slow", b"0.5", unique=uid)
        return cut, healed

    cut, healed = lab.netns.run_async(scenario)
    cut_wall, healed_wall = time.time() - (time.monotonic() - cut), time.time() - (time.monotonic() - healed)
    wait_until(lambda: set(ids) <= set(lab.runs()), timeout=DETECTION + 30, interval=0.1, what="every job ran")
    recovered = time.monotonic() - healed
    runs = Counter(lab.runs())
    ended: dict[str, float] = {}
    for line in lab.record.read_text().splitlines():
        uid, at = line.split("\t")
        ended.setdefault(uid, float(at))  # the first run's end
    twice = sorted(uid for uid, n in runs.items() if n > 1)
    for uid in twice:
        assert cut_wall - 1 <= ended[uid] <= healed_wall + 1, f"{uid} ran twice though its first run ended outside"
    assert worker.proc is not None and worker.proc.poll() is None
    figure("partition 20 s: all 30 jobs done after the heal within", f"{recovered:.1f} s")
    figure("partition 20 s: jobs run twice (at-least-once)", f"{len(twice)} of {len(ids)} {twice}")


def test_nat_that_forgets_idle_connections(lab: Lab) -> None:
    """A NAT forgets a connection idle for 3 s (real ones: 60 s or more; shortened so the test is quick) and
    silently drops its later packets.  The worker polls while idle (idle_poll, default 1 s) and sends
    heartbeats, so with default settings its connection never idles long enough: a job submitted after 6 s of
    quiet runs at once (waits under 5 s)."""
    g = lab.gearmand()
    lab.netns.forget_idle_after(3, g.port)
    lab.worker([g.address]).start(wait_for="net_echo", gearmand=g)
    time.sleep(6)

    async def submit() -> bytes:
        async with Client([g.client_address]) as client:
            return await client.submit("net_echo", b"after quiet", timeout=5)

    assert lab.netns.run_async(submit) == b"after quiet"


def test_nat_forgets_a_quiet_worker_and_it_comes_back(lab: Lab) -> None:
    """Worst case: the worker's idle polling is off (idle_poll=0) so only the heartbeat (default 10 s + 10 s)
    guards it, and the NAT forgets its connection after 3 s idle.  A job submitted after that waits at most the
    30 s detection bound: the heartbeat finds the connection dead and the worker reconnects."""
    g = lab.gearmand()
    lab.netns.forget_idle_after(3, g.port)
    worker = lab.worker([g.address], env={"GEARWORKER_IDLE_POLL": "0"}).start(wait_for="net_echo", gearmand=g)
    time.sleep(4)  # longer than the NAT's idle timeout, shorter than the heartbeat interval

    async def submit() -> tuple[bytes, float]:
        async with Client([g.client_address]) as client:
            start = time.monotonic()
            result = await client.submit("net_echo", b"after the NAT forgot", timeout=DETECTION)
            return result, time.monotonic() - start

    result, waited = lab.netns.run_async(submit)
    assert result == b"after the NAT forgot"
    assert lab.netns.dropped_packets() > 0, "the NAT did drop the forgotten connection's packets"
    assert worker.proc is not None and worker.proc.poll() is None
    figure("NAT forgot the worker's idle connection: job waited", f"{waited:.1f} s")
