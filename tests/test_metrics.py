"""Prometheus metrics and /healthz, scraped over real HTTP.

The first half drives :class:`Metrics` directly; the end-to-end tests at the
bottom run the real worker against a real gearmand and scrape it.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from gearmand import Gearmand, free_port
from prometheus_client.parser import text_string_to_metric_families
from support import start_worker, wait_until

from gearworker.metrics.prometheus import Metrics, serve


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse a scrape into {(sample name, labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


class Health:
    def __init__(self) -> None:
        self.ok = True

    def __call__(self) -> bool:
        return self.ok


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[Metrics, Health, str]]:
    """A Metrics with its HTTP endpoint on a free loopback port."""
    metrics, health = Metrics(), Health()
    server = await serve(metrics, "127.0.0.1", 0, health)
    port = server.sockets[0].getsockname()[1]
    yield metrics, health, f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


async def test_job_counts_durations_and_in_flight_are_scraped(endpoint: tuple[Metrics, Health, str]) -> None:
    """Jobs by function and outcome, the duration histogram and in-flight jobs show in /metrics."""
    metrics, _, url = endpoint
    for _ in range(3):
        metrics.job_started("echo")
        metrics.job_finished("echo", "complete", 0.002)
    metrics.job_started("resize")
    metrics.job_finished("resize", "fail", 1.5)
    metrics.job_started("resize")  # still running
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.get(url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    s = samples(r.text)
    assert value(s, "gearworker_jobs_total", function="echo", outcome="complete") == 3
    assert value(s, "gearworker_jobs_total", function="resize", outcome="fail") == 1
    assert value(s, "gearworker_job_duration_seconds_count", function="echo") == 3
    assert value(s, "gearworker_job_duration_seconds_sum", function="resize") == pytest.approx(1.5)
    assert value(s, "gearworker_job_duration_seconds_bucket", function="echo", le="0.0025") == 3
    assert value(s, "gearworker_job_duration_seconds_bucket", function="resize", le="1.0") == 0
    assert value(s, "gearworker_jobs_in_flight", function="echo") == 0
    assert value(s, "gearworker_jobs_in_flight", function="resize") == 1


async def test_connection_state_reconnects_and_pool(endpoint: tuple[Metrics, Health, str]) -> None:
    """Each server has one state gauge set to 1; reconnects, pool size and pool restarts are exported."""
    metrics, _, url = endpoint
    metrics.set_connection("h1:4730", "connecting")
    metrics.set_connection("h1:4730", "connected")
    metrics.set_connection("h2:4730", "down")
    metrics.reconnect("h2:4730")
    metrics.reconnect("h2:4730")
    metrics.set_pool(4)
    metrics.pool_restart()
    async with httpx.AsyncClient(trust_env=False) as client:
        s = samples((await client.get(url + "/metrics")).text)
    state = "gearworker_server_connection_state"
    assert [value(s, state, server="h1:4730", state=x) for x in ("connected", "connecting", "down")] == [1, 0, 0]
    assert [value(s, state, server="h2:4730", state=x) for x in ("connected", "connecting", "down")] == [0, 0, 1]
    assert value(s, "gearworker_server_reconnects_total", server="h2:4730") == 2
    assert value(s, "gearworker_pool_processes") == 4
    assert value(s, "gearworker_pool_restarts_total") == 1
    assert value(s, "process_resident_memory_bytes") > 0


async def test_healthz_follows_the_health_callback_with_a_reason(endpoint: tuple[Metrics, Health, str]) -> None:
    """/healthz is 200 "ok" while healthy() is True, else 503 naming the servers' states."""
    metrics, health, url = endpoint
    metrics.set_connection("127.0.0.1:4730", "connected")
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.get(url + "/healthz")
        assert (r.status_code, r.text) == (200, "ok\n")
        health.ok = False
        metrics.set_connection("127.0.0.1:4730", "down")
        r = await client.get(url + "/healthz")
        assert (r.status_code, r.text) == (503, "not connected to any job server (127.0.0.1:4730 down)\n")
        health.ok = True
        assert (await client.get(url + "/healthz")).status_code == 200


async def test_default_health_is_connected_to_at_least_one_server() -> None:
    """Without a callback, /healthz is healthy while any server is connected."""
    metrics = Metrics()
    server = await serve(metrics, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/healthz"
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            r = await client.get(url)
            assert (r.status_code, r.text) == (503, "no job server connection yet\n")
            metrics.set_connection("a:1", "down")
            metrics.set_connection("b:2", "connected")
            assert (await client.get(url)).status_code == 200
    finally:
        server.close()
        await server.wait_closed()


async def test_unknown_paths_methods_and_garbage(endpoint: tuple[Metrics, Health, str]) -> None:
    """404 for other paths, 405 for other methods, HEAD has no body, garbage gets 400 and the server lives on."""
    _, _, url = endpoint
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(url + "/")).status_code == 404
        r = await client.post(url + "/metrics", content=b"x")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        r = await client.head(url + "/healthz")
        assert r.status_code == 200 and r.content == b""
        assert (await client.get(url + "/metrics?name[]=x")).status_code == 200
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"NONSENSE\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
    writer.close()
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(url + "/healthz")).status_code == 200


def test_unknown_outcome_or_state_is_a_bug_not_a_new_label() -> None:
    """A typo in an outcome or state raises instead of silently creating a new time series."""
    m = Metrics()
    with pytest.raises(ValueError, match="unknown job outcome 'completed'"):
        m.job_finished("echo", "completed", 0.1)
    with pytest.raises(ValueError, match="unknown connection state 'up'"):
        m.set_connection("h:1", "up")


def test_two_instances_do_not_share_a_registry() -> None:
    """Metrics() gets its own registry, so several can exist in one process (tests, embedded workers)."""
    a, b = Metrics(), Metrics()
    a.job_started("echo")
    a.job_finished("echo", "complete", 0.1)
    assert value(samples(a.render().decode()), "gearworker_jobs_total", function="echo", outcome="complete") == 1
    assert value(samples(b.render().decode()), "gearworker_jobs_total", function="echo", outcome="complete") == 0


# -- end to end: the real worker against a real gearmand ---------------------------


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5, trust_env=False)
    except httpx.TransportError:
        return None


def submit(g: Gearmand, function: str, payload: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["gearman", "-h", "127.0.0.1", "-p", str(g.port), "-f", function, payload],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_real_jobs_are_counted_and_healthz_follows_gearmand(gearmand: Gearmand) -> None:
    """After real jobs /metrics has the right counts; /healthz is 503 while gearmand is down and 200 once back."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def healthz(status: int) -> Callable[[], bool]:
        """/healthz answers ``status``."""
        return lambda: (r := get(base + "/healthz")) is not None and r.status_code == status

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        r = get(base + "/metrics")
        assert r is not None, "/metrics did not answer"
        return samples(r.text)

    w = start_worker([gearmand.address], "--metrics", f"127.0.0.1:{port}", "--processes", "1")
    try:
        wait_until(healthz(200), 30, what="the worker to become healthy", process=w)
        for i in range(3):
            assert submit(gearmand, "echo", f"hello {i}").stdout == f"hello {i}".encode()
        assert submit(gearmand, "reverse", "abc").stdout == b"cba"
        submit(gearmand, "fail", "x")

        def counted() -> bool:
            r = get(base + "/metrics")
            if r is None:
                return False
            s = samples(r.text)
            return (
                value(s, "gearworker_jobs_total", function="echo", outcome="complete") == 3
                and value(s, "gearworker_jobs_total", function="reverse", outcome="complete") == 1
                and value(s, "gearworker_jobs_total", function="fail", outcome="fail") == 1
            )

        wait_until(counted, 30, what="job counts echo=3 reverse=1 fail=1", process=w)
        s = scrape()
        assert value(s, "gearworker_job_duration_seconds_count", function="echo") == 3
        assert value(s, "gearworker_jobs_in_flight", function="echo") == 0
        assert value(s, "gearworker_server_connection_state", server=gearmand.address, state="connected") == 1
        assert value(s, "gearworker_pool_processes") == 1

        gearmand.stop()
        wait_until(healthz(503), 30, what="/healthz to answer 503 with gearmand stopped", process=w)
        r = get(base + "/healthz")
        assert r is not None and r.text.startswith(f"not connected to any job server ({gearmand.address} ")
        gearmand.start()
        wait_until(healthz(200), 30, what="/healthz to answer 200 again once gearmand is back", process=w)
        s = scrape()
        assert value(s, "gearworker_server_reconnects_total", server=gearmand.address) >= 1
        assert submit(gearmand, "echo", "again").stdout == b"again"
    finally:
        assert w.stop() == 0
