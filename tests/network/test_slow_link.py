"""A slow link (20 ms each way, through the delay proxy; this kernel has no netem)."""

from __future__ import annotations

import asyncio

from gearmand import Gearmand
from netlab import HERE, DelayProxy
from support import WorkerProcess

from gearworker import Client


async def test_jobs_complete_with_correct_results_over_a_slow_link(gearmand: Gearmand) -> None:
    """Worker and client both 20 ms one way from gearmand: 200 concurrent jobs all complete, each with its own
    result (none mixed up, none lost)."""
    to_worker = DelayProxy(gearmand.address, 20).start()
    to_client = DelayProxy(gearmand.address, 20).start()
    worker = WorkerProcess([to_worker.address], handlers=HERE / "handlers")
    try:
        worker.start(wait_for="net_echo", gearmand=gearmand)
        async with Client([to_client.address]) as client:
            payloads = [f"payload {i} ".encode() * (1 + i % 50) for i in range(200)]
            results = await asyncio.wait_for(asyncio.gather(*(client.submit("net_echo", p) for p in payloads)), 60)
        assert list(results) == payloads
    finally:
        worker.stop(timeout=5)
        to_worker.stop()
        to_client.stop()
