"""The client with several servers, and with servers that die: routing, failover, prompt failures, recovery."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypedDict

import pytest
from support import MakeGearmand, Workers, free_port_address, workers_fixture  # noqa: F401

from gearworker import Client
from gearworker.errors import ConnectionLost, NoServerAvailable


class Retry(TypedDict):
    reconnect_min: float
    reconnect_max: float


FAST_RETRY: Retry = {"reconnect_min": 0.05, "reconnect_max": 0.2}


async def test_same_unique_id_coalesces_across_a_three_server_setup(
    gearmand_factory: MakeGearmand, workers: Workers
) -> None:
    """Two clients (as two web processes would) with the same 3 servers send a unique id to the same
    server, so gearmand coalesces: one job, one result for both; different ids spread over all servers."""
    servers = [gearmand_factory() for _ in range(3)]
    addresses = [g.address for g in servers]
    workers.php(servers, 2)
    async with Client(addresses) as one, Client(addresses) as two:
        # Both connected to that server first: coalescing needs the second submit to arrive within
        # php.random's 300 ms, which a slow connect could miss.
        for client in (one, two):
            assert await client.submit("php.echo", "warm", unique="photo-42") == b"warm"
        first, second = await asyncio.gather(
            one.submit("php.random", "x", unique="photo-42"), two.submit("php.random", "x", unique="photo-42")
        )
        assert first == second
        h1 = await one.submit_background("php.nobody", "a", unique="queued-1")
        h2 = await two.submit_background("php.nobody", "b", unique="queued-1")
        assert h1 == h2 and h1.server == h2.server == one.server_for("queued-1")
        used = Counter([(await one.submit_background("php.nobody", "c", unique=f"id-{i}")).server for i in range(60)])
        assert set(used) == set(addresses)
        assert sum(servers[addresses.index(a)].status()["php.nobody"][0] for a in addresses) == 61


def test_the_server_for_a_unique_id_is_the_same_in_another_process() -> None:
    """The unique-id hash is stable across processes (not Python's salted hash())."""
    addresses = ["10.0.0.1:4730", "10.0.0.2:4730", "10.0.0.3:4730"]
    here = [Client(addresses).server_for(f"key-{i}") for i in range(20)]
    code = (
        "from gearworker import Client; import sys; c = Client(sys.argv[1:]); "
        "print(' '.join(c.server_for(f'key-{i}') for i in range(20)))"
    )
    there = subprocess.run([sys.executable, "-c", code, *addresses], capture_output=True, text=True, check=True)
    assert there.stdout.split() == here
    assert len(set(here)) == 3


async def test_jobs_without_unique_id_are_spread_round_robin(gearmand_factory: MakeGearmand) -> None:
    """With no unique id, consecutive submits go to each server in turn."""
    servers = [gearmand_factory() for _ in range(3)]
    async with Client([g.address for g in servers]) as client:
        used = Counter([(await client.submit_background("php.nobody", "x")).server for _ in range(30)])
    assert used == {g.address: 10 for g in servers}


async def test_failover_to_the_next_server_when_one_refuses_connections(
    gearmand_factory: MakeGearmand, workers: Workers
) -> None:
    """A server that refuses connections is skipped, for round-robin jobs and for unique ids hashed to it."""
    live = gearmand_factory()
    dead = free_port_address()
    workers.php([live])
    async with Client([dead, live.address], **FAST_RETRY) as client:
        results = await asyncio.gather(*(client.submit("php.echo", f"job {i}") for i in range(20)))
        assert results == [f"job {i}".encode() for i in range(20)]
        to_dead = next(u for u in (f"u{i}" for i in range(100)) if client.server_for(u) == dead)
        assert await client.submit("php.echo", "hashed", unique=to_dead) == b"hashed"
        handle = await client.submit_background("php.nobody", "x", unique=to_dead)
        assert handle.server == live.address
        assert (await client.status_unique(to_dead)).known
        assert (await client.status(bytes(handle))).known  # a plain handle: every server asked, the dead one skipped


async def test_gearmand_killed_fails_in_flight_jobs_at_once_and_the_client_recovers(
    gearmand_factory: MakeGearmand, workers: Workers
) -> None:
    """Jobs running or queued when gearmand is SIGKILLed fail with ConnectionLost naming the server, long
    before they would have finished; while it is down submits fail fast; once it is back, submits work again."""
    g = gearmand_factory()
    workers.php([g], 2)
    async with Client([g.address], **FAST_RETRY) as client:
        jobs = [asyncio.ensure_future(client.submit("php.sleep", "60")) for _ in range(4)]
        for _ in range(200):
            if g.status().get("php.sleep", (0, 0, 0))[1] == 2:
                break
            await asyncio.sleep(0.05)
        g.kill()
        done, pending = await asyncio.wait(jobs, timeout=20)  # generous; the jobs would take 60 s
        assert not pending
        for job in done:
            with pytest.raises(ConnectionLost, match=g.address):
                job.result()
        with pytest.raises(NoServerAvailable, match=g.address):
            await client.submit("cli.cat", "x")
        g.start()  # same port
        workers.gearman_cli(g, "cli.cat", "cat")
        assert await _retry(lambda: client.submit("cli.cat", "back")) == b"back"


async def test_a_dying_server_sends_later_jobs_to_the_other_server(
    gearmand_factory: MakeGearmand, workers: Workers
) -> None:
    """After one of two servers dies, every new job (round robin or hashed to it) goes to the survivor."""
    a, b = gearmand_factory(), gearmand_factory()
    workers.php([a, b], 2)
    async with Client([a.address, b.address], **FAST_RETRY) as client:
        assert len(await asyncio.gather(*(client.submit("php.echo", "x") for _ in range(10)))) == 10
        assert all(s.router is not None for s in client.servers)
        a.kill()
        for _ in range(200):  # let the client see the connection close
            if client.servers[0].router is None:
                break
            await asyncio.sleep(0.01)
        results = await asyncio.gather(*(client.submit("php.echo", f"{i}", unique=f"k{i}") for i in range(20)))
        assert results == [f"{i}".encode() for i in range(20)]
        handles = [await client.submit_background("php.nobody", "x") for _ in range(6)]
        assert {h.server for h in handles} == {b.address}


async def _retry(make: Callable[[], Awaitable[bytes]], attempts: int = 100) -> bytes:
    """Call ``make()`` until it stops raising NoServerAvailable (reconnect backoff) or attempts run out."""
    for _ in range(attempts):
        try:
            return await make()
        except NoServerAvailable:
            await asyncio.sleep(0.1)
    raise AssertionError("the client never reconnected")


async def test_a_connect_that_fails_after_its_only_caller_gave_up_leaves_no_unretrieved_error() -> None:
    """A submit cancelled mid-connect (a web request's timeout) must not leave "Task exception was never retrieved"."""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(str(context.get("message"))))
    try:
        async with Client([free_port_address()]) as client:  # refuses: nothing listens there
            submit = asyncio.ensure_future(client.submit("echo", b"x"))
            await asyncio.sleep(0)  # the connect has started
            submit.cancel()
            with pytest.raises(asyncio.CancelledError):
                await submit
            for _ in range(20):  # let the connect fail
                await asyncio.sleep(0.01)
        del submit
        gc.collect()
        await asyncio.sleep(0)
        assert not [m for m in reported if "never retrieved" in m], reported
    finally:
        loop.set_exception_handler(None)
