"""The worker never grabs a job it cannot start now, and shares its capacity among servers."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from gearmand import Gearmand
from support import MakeGearmand, WorkerProcess, handlers_dir, wait_until


def submit_background(g: Gearmand, function: str, payload: str, count: int) -> None:
    for i in range(count):
        subprocess.run(
            ["gearman", "-p", str(g.port), "-b", "-u", f"{function}-{payload}-{i}", "-f", function, "--", payload],
            check=True,
            capture_output=True,
            timeout=10,
        )


GATED_CPU = """
import os, time
from gearworker import handler

@handler("gated_cpu", cpu=True)
def gated_cpu(job):  # runs in a pool process until the test creates the file $GW_RELEASE
    while not os.path.exists(os.environ["GW_RELEASE"]):
        time.sleep(0.02)
    return "released"
"""


def test_cpu_job_stays_queued_when_the_pool_is_full_and_another_worker_takes_it(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """With one pool process busy, the second CPU job is left on the server for another machine."""
    handlers = handlers_dir(tmp_path, gated=GATED_CPU)
    release = tmp_path / "release"
    env = {"GW_RELEASE": str(release)}
    a = WorkerProcess([gearmand.address], handlers=handlers, args=["--processes", "1"], env=env)
    a.start(wait_for="gated_cpu", gearmand=gearmand)
    b = WorkerProcess([gearmand.address], handlers=handlers, args=["--processes", "1"], env=env)
    try:
        # The jobs run until released: worker b starts and registers while a's job still runs, however
        # slow the machine (fixed 3 s jobs once let a finish first and take the second job).
        submit_background(gearmand, "gated_cpu", "x", 2)
        wait_until(lambda: gearmand.status()["gated_cpu"][1] == 1, timeout=20)
        for _ in range(10):  # stays so: worker a holds one job, the other waits on the server
            assert gearmand.status()["gated_cpu"][:2] == (2, 1)
            time.sleep(0.1)
        b.start()
        b.wait_registered(gearmand, "gated_cpu", workers=2)  # b itself, not a, which registered long ago
        # both run at once, one on each worker
        wait_until(lambda: gearmand.status()["gated_cpu"][:2] == (2, 2), timeout=20)
        release.touch()
        wait_until(lambda: gearmand.status()["gated_cpu"][:2] == (0, 0), timeout=20)
    finally:
        release.touch()
        assert a.stop() == 0
        assert b.proc is None or b.stop() == 0


def test_per_handler_limit_from_settings_holds(gearmand: Gearmand) -> None:
    """GEARWORKER_HANDLER_CONCURRENCY=slow=1: never more than one `slow` job at once in this worker."""
    w = WorkerProcess([gearmand.address], env={"GEARWORKER_HANDLER_CONCURRENCY": "slow=1"})
    w.start(wait_for="slow", gearmand=gearmand)
    try:
        submit_background(gearmand, "slow", "1", 3)
        seen = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            queued, running, _ = gearmand.status()["slow"]
            seen.add(running)
            if queued == 0:
                break
            time.sleep(0.05)
        assert seen <= {0, 1} and 1 in seen
        assert gearmand.status()["slow"][:2] == (0, 0)
        # The other functions were not held back by slow's limit.
        out = subprocess.run(
            ["gearman", "-p", str(gearmand.port), "-f", "echo", "--", "x"], capture_output=True, timeout=10, check=True
        )
        assert out.stdout == b"x"
    finally:
        assert w.stop() == 0


def test_a_concurrency_of_one_is_shared_among_servers(gearmand_factory: MakeGearmand) -> None:
    """concurrency=1 with two servers: both servers' queues are worked off, not only the first one's."""
    g1, g2 = gearmand_factory(), gearmand_factory()
    submit_background(g1, "slow", "0", 5)
    submit_background(g2, "slow", "0", 5)
    w = WorkerProcess([g1.address, g2.address], args=["--concurrency", "1"])
    w.start(wait_for="slow", gearmand=g2)
    try:
        wait_until(lambda: g1.status()["slow"][0] == 0 and g2.status()["slow"][0] == 0, timeout=20)
    finally:
        assert w.stop() == 0


def test_worker_registers_again_and_serves_after_its_server_restarts(gearmand: Gearmand) -> None:
    """CAN_DO is sent again on every reconnect: jobs flow after gearmand comes back on the same port."""
    w = WorkerProcess([gearmand.address], env={"GEARWORKER_RECONNECT_MAX": "0.5"})
    w.start(wait_for="echo", gearmand=gearmand)
    try:
        gearmand.restart()
        w.wait_registered(gearmand, "echo")
        out = subprocess.run(
            ["gearman", "-p", str(gearmand.port), "-f", "reverse", "--", "abc"],
            capture_output=True,
            timeout=10,
            check=True,
        )
        assert out.stdout == b"cba"
        assert w.log_text().count('"server.down"') >= 1
    finally:
        assert w.stop() == 0


async def test_five_hundred_jobs_in_flight_through_one_worker_all_complete(gearmand: Gearmand) -> None:
    """A pipeline of grabs ending on a job must grab again (once stalled with 336 queued, 0 running)."""
    import asyncio

    from gearworker import Client

    w = WorkerProcess([gearmand.address]).start(wait_for="echo", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            payloads = [f"job-{i}".encode() * (i % 7 + 1) for i in range(500)]
            results = await asyncio.wait_for(asyncio.gather(*(client.submit("echo", p) for p in payloads)), 60)
        assert results == payloads
    finally:
        assert w.stop() == 0
