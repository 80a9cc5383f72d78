"""The async client against one real gearmand and workers nobody here wrote (php-gearman, ``gearman -w``)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ssl
from pathlib import Path
from typing import Any, cast

import pytest
from gearmand import Gearmand
from support import (  # noqa: F401
    TEST_CA_NAME,
    WorkerProcess,
    Workers,
    ca_names,
    every_byte,
    free_port_address,
    workers_fixture,
    write_test_ca,
)

from gearworker import Client, config, submit, submit_background
from gearworker.client import Handle, JobStatus, Progress, Result
from gearworker.errors import JobException, JobFailed, JobTimeout, LocalProtocolError, NoServerAvailable
from gearworker.protocol import StatusRow
from gearworker.transport import StreamOptions


async def test_500_concurrent_jobs_finishing_out_of_order_each_reach_their_own_caller(
    gearmand: Gearmand, workers: Workers
) -> None:
    """500 callers share one connection; 4 PHP workers sleep 0-5 ms at random, so results come back
    out of order, and still every caller gets the result of its own job."""
    workers.php([gearmand], 4)
    finished: list[int] = []
    async with Client([gearmand.address]) as client:

        async def one(i: int) -> None:
            payload = f"job-{i}-".encode() * (1 + i % 7)
            result = await client.submit("php.shuffle", payload)
            assert result == payload[::-1]
            finished.append(i)

        await asyncio.gather(*(one(i) for i in range(500)))
        connection = client.servers[0].router
        assert connection is not None and connection.in_flight == 0
    assert sorted(finished) == list(range(500))
    assert finished != sorted(finished), "the workers should have finished jobs out of order"


async def test_every_byte_value_round_trips_through_php_and_gearman_cli_workers(
    gearmand: Gearmand, workers: Workers
) -> None:
    """Payloads and results are bytes end to end: NUL and every other byte value survive both ways."""
    workers.php([gearmand])
    workers.gearman_cli(gearmand, "cli.cat", "cat")
    data = every_byte(4096)
    async with Client([gearmand.address]) as client:
        assert await client.submit("php.echo", data) == data
        assert await client.submit("cli.cat", data) == data
        assert await client.submit("php.echo", b"") == b""
        assert await client.submit("php.echo", b"\x00") == b"\x00"
        two_mb = every_byte(2 * 1024 * 1024 + 3)
        assert await client.submit("php.echo", two_mb) == two_mb


async def test_10_mb_round_trip(gearmand: Gearmand, workers: Workers) -> None:
    """A 10 MB workload with every byte value comes back intact (gearworker's echo handler;
    libgearman workers need ~5 s for this, which would slow the suite)."""
    workers.gearworker(gearmand)
    data = every_byte(10 * 1024 * 1024)
    async with Client([gearmand.address]) as client:
        result = await client.submit("echo", data)
    assert len(result) == len(data) and result == data


async def test_many_large_payloads_at_once_wait_for_the_send_buffer_and_all_round_trip(
    gearmand: Gearmand, workers: Workers
) -> None:
    """20 concurrent 1 MB jobs overflow the socket buffer: submits wait for it to drain (pause/resume_writing)
    instead of piling up, and every caller still gets its own bytes back."""
    workers.gearworker(gearmand)
    payloads = [bytes([i]) + every_byte(1024 * 1024) for i in range(20)]
    async with Client([gearmand.address]) as client:
        big = asyncio.ensure_future(client.submit("echo", payloads[0] * 5))
        for _ in range(3):
            await asyncio.sleep(0)  # the 5 MB write is flushed: the transport pauses us
        results = await asyncio.gather(*(client.submit("echo", p) for p in payloads))
        assert results == payloads
        assert await big == payloads[0] * 5
        router = client.servers[0].router
        assert router is not None and router.stream is not None and not router.stream.paused


async def test_str_and_json_payloads_and_result_decoding(gearmand: Gearmand, workers: Workers) -> None:
    """str goes as UTF-8, dict/list as JSON; Result.text() and Result.json() decode the answer."""
    workers.php([gearmand])
    async with Client([gearmand.address]) as client:
        text = await client.submit("php.echo", "grüße ✓")
        assert isinstance(text, Result) and isinstance(text, bytes)
        assert text.text() == "grüße ✓" and text == "grüße ✓".encode()
        assert (await client.submit("php.echo", {"a": [1, 2], "b": None})).json() == {"a": [1, 2], "b": None}
        assert (await client.submit("php.echo", [1, "x"])).json() == [1, "x"]
        with pytest.raises(TypeError):
            await client.submit("php.echo", cast(Any, 12))  # not a payload type: the run-time check
        with pytest.raises(ValueError, match="priority"):
            await client.submit("php.echo", "x", priority=cast(Any, "urgent"))  # not a priority: the run-time check


async def test_progress_reaches_sync_and_async_callbacks_and_the_iterator(gearmand: Gearmand, workers: Workers) -> None:
    """WORK_STATUS, WORK_DATA and WORK_WARNING arrive in order through on_progress (plain or async)
    and through ``async for`` over client.start(); the result follows."""
    workers.php([gearmand])
    expected = [
        Progress("status", 1, 3),
        Progress("data", data=b"data-1"),
        Progress("warning", data=b"warning-1"),
        Progress("status", 3, 3),
    ]

    def strip(events: list[Progress]) -> list[Progress]:
        return [Progress(e.kind, e.numerator, e.denominator, e.data) for e in events]

    async with Client([gearmand.address]) as client:
        seen: list[Progress] = []
        assert await client.submit("php.progress", "a", on_progress=seen.append) == b"done:a"
        assert strip(seen) == expected and seen[0].handle.startswith(b"H:") and seen[0].fraction == 1 / 3

        seen_async: list[Progress] = []

        async def record(event: Progress) -> None:
            await asyncio.sleep(0)
            seen_async.append(event)

        assert await client.submit("php.progress", "b", on_progress=record) == b"done:b"
        await asyncio.sleep(0.05)  # async callbacks run as tasks beside routing
        assert strip(seen_async) == expected

        async with client.start("php.progress", "c") as job:
            events = [event async for event in job]
            assert await job.result() == b"done:c"
            assert job.handle.startswith(b"H:")
        assert strip(events) == expected


async def test_failures_carry_the_workers_message(gearmand: Gearmand, workers: Workers) -> None:
    """WORK_FAIL raises JobFailed; after WORK_WARNING it carries that text (gearworker's convention);
    WORK_EXCEPTION raises JobException with the worker's message.  The connection stays usable."""
    workers.php([gearmand])
    async with Client([gearmand.address]) as client:
        with pytest.raises(JobFailed) as failed:
            await client.submit("php.fail", "x")
        assert type(failed.value) is JobFailed and failed.value.message == "job failed"
        with pytest.raises(JobFailed, match="ValueError: bad input 42") as warned:
            await client.submit("php.warnfail", "42")
        assert warned.value.function == "php.warnfail" and warned.value.handle
        with pytest.raises(JobException) as exc:
            await client.submit("php.exception", "oops")
        assert exc.value.message == "boom: oops"
        async with client.start("php.exception", "it") as job:
            with pytest.raises(JobException, match="boom: it"):
                await job.result()
        assert await client.submit("php.echo", "still fine") == b"still fine"


async def test_background_jobs_run_in_priority_order_and_status_follows_them(
    gearmand: Gearmand, workers: Workers, tmp_path: Path
) -> None:
    """Background jobs queued at low, normal and high priority (each with a unique id) run high first,
    low last; status by handle and by unique id report them until they are done."""
    record = tmp_path / "order.txt"
    async with Client([gearmand.address]) as client:
        handles: dict[str, Handle] = {}
        for priority in ("low", "normal", "high"):
            handles[priority] = await client.submit_background(
                "php.record", priority, priority=priority, unique=f"bg-{priority}"
            )
            assert handles[priority].server == gearmand.address
        status = await client.status(handles["low"])
        assert status == JobStatus(known=True, running=False, numerator=0, denominator=0)
        assert (await client.status_unique("bg-high")).known
        workers.php([gearmand], record=record, wait=False)
        for priority, handle in handles.items():
            for _ in range(200):
                if not (await client.status(handle)).known:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"{priority} job never finished")
        assert not (await client.status_unique("bg-low")).known
    assert record.read_text().split() == ["high", "normal", "low"]


async def test_background_job_when_waits_for_its_time(gearmand: Gearmand, workers: Workers, tmp_path: Path) -> None:
    """when= sends SUBMIT_JOB_EPOCH: gearmand 1.1.20 holds the job until that time, then runs it."""
    record = tmp_path / "ran.txt"
    workers.php([gearmand], record=record)
    async with Client([gearmand.address]) as client:
        when = datetime.datetime.now() + datetime.timedelta(seconds=2)
        handle = await client.submit_background("php.record", "scheduled", when=when)
        await asyncio.sleep(0.3)
        assert (await client.status(handle)).known and not record.exists()
        for _ in range(200):
            if record.exists():
                break
            await asyncio.sleep(0.05)
        assert record.read_text() == "scheduled\n"
        assert datetime.datetime.now() >= when - datetime.timedelta(seconds=1)  # epoch has 1 s resolution
        with pytest.raises(ValueError, match="priority"):
            await client.submit_background("php.record", "x", when=when, priority="high")


async def test_a_caller_timing_out_does_not_disturb_the_other_jobs_on_the_connection(
    gearmand: Gearmand, workers: Workers
) -> None:
    """One caller gives up (wait_for / timeout=), another is cancelled before JOB_CREATED even arrives;
    the other jobs on the same connection all get their own results and the connection stays."""
    workers.php([gearmand], 4)
    async with Client([gearmand.address]) as client:
        assert await client.submit("php.echo", "warm up") == b"warm up"
        connection = client.servers[0].router
        others = [asyncio.ensure_future(client.submit("php.shuffle", f"other-{i}")) for i in range(50)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.submit("php.sleep", "0.5"), 0.05)
        with pytest.raises(JobTimeout):
            await client.submit("php.sleep", "0.5", timeout=0.05)
        early = asyncio.ensure_future(client.submit("php.shuffle", "cancelled early"))
        await asyncio.sleep(0)  # SUBMIT queued, JOB_CREATED not back yet
        early.cancel()
        later = [asyncio.ensure_future(client.submit("php.shuffle", f"later-{i}")) for i in range(50)]
        results = await asyncio.gather(*others, *later)
        assert results == [f"other-{i}"[::-1].encode() for i in range(50)] + [
            f"later-{i}"[::-1].encode() for i in range(50)
        ]
        assert early.cancelled()
        assert client.servers[0].router is connection
        # The abandoned jobs finish on the workers (0.5 s each); their results are dropped.
        assert connection is not None
        deadline = asyncio.get_running_loop().time() + 30
        while connection.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert connection.in_flight == 0
        assert await client.submit("php.echo", "after") == b"after"


async def test_same_unique_id_on_one_connection_coalesces_and_both_callers_get_the_result(
    gearmand: Gearmand, workers: Workers
) -> None:
    """gearmand gives two submits with the same unique id one job and one handle; both callers get its result,
    and a third caller that times out leaves the other two unharmed."""
    workers.php([gearmand], 2)
    async with Client([gearmand.address]) as client:
        jobs = [asyncio.ensure_future(client.submit("php.random", "x", unique="same")) for _ in range(2)]
        impatient = asyncio.ensure_future(client.submit("php.random", "x", unique="same", timeout=0.1))
        other = asyncio.ensure_future(client.submit("php.random", "x", unique="different"))
        first, second = await asyncio.gather(*jobs)
        assert first == second and len(first) == 32
        assert await other != first
        with pytest.raises(JobTimeout):
            await impatient


async def test_no_reachable_server_raises_a_clear_error_quickly() -> None:
    """With nothing listening, submit raises NoServerAvailable naming the server (no hang)."""
    address = free_port_address()
    async with Client([address], reconnect_min=0.01, reconnect_max=0.05) as client:
        with pytest.raises(NoServerAvailable, match=address):
            await asyncio.wait_for(client.submit("php.echo", "x"), 10)
        with pytest.raises(NoServerAvailable):
            await asyncio.wait_for(client.submit_background("php.echo", "x"), 10)


async def test_status_of_an_unknown_handle_and_unique(gearmand: Gearmand) -> None:
    """A handle or unique id gearmand never saw is reported as not known."""
    async with Client([gearmand.address]) as client:
        assert await client.status(b"H:nowhere:1") == JobStatus(False, False, 0, 0)
        assert (await client.status_unique("never")).known is False


async def test_server_status_and_workers_are_typed_rows(gearmand: Gearmand, workers: Workers) -> None:
    """server_status(), workers() and admin() parse the text admin protocol per server."""
    workers.php([gearmand], 2)
    async with Client([gearmand.address]) as client:
        await client.submit_background("php.nobody", "queued")
        status = await client.server_status()
        rows = {row.function: row for row in status[gearmand.address]}
        assert rows["php.echo"] == StatusRow("php.echo", 0, 0, 2)
        assert rows["php.nobody"] == StatusRow("php.nobody", 1, 0, 0)
        listed = (await client.workers())[gearmand.address]
        assert sum("php.echo" in row.functions for row in listed) == 2
        # One line, the version `gearmand --version` prints: "1.1.20+ds", "2.0.0", or "" from 2.0.0 built
        # as its tag's archive comes (docs/gearmand.md).
        assert await client.admin("version") == [gearmand.binary.version.reported]


async def test_module_level_submit_uses_the_servers_from_the_environment(
    gearmand: Gearmand, workers: Workers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``await submit(...)`` / ``submit_background(...)`` need no Client: GEARWORKER_SERVERS says where."""
    workers.php([gearmand])
    monkeypatch.chdir(tmp_path)  # no settings.py here
    monkeypatch.setenv("GEARWORKER_SERVERS", gearmand.address)
    assert (await submit("php.echo", {"k": 1})).json() == {"k": 1}
    handle = await submit_background("php.echo", "bg", priority="low")
    assert handle.startswith(b"H:") and handle.server == gearmand.address
    from gearworker.client import default_client

    await default_client().close()


RELAY = """
from gearworker import Job, handler, submit


@handler("relay")
async def relay(job: Job) -> bytes:
    # A follow-up job from inside a handler: no servers named, the worker's own are used.
    return b"relayed " + bytes(await submit("shout", job.workload, timeout=20))


@handler("shout")
async def shout(job: Job) -> bytes:
    return job.workload.upper()
"""


async def test_submit_inside_a_handler_goes_to_the_workers_servers_given_by_its_flags(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """The worker was told its server by ``--server`` alone (nothing in settings.py or the environment): a handler's
    ``await submit(...)`` reaches that server, not the settings' default 127.0.0.1:4730."""
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    (handlers / "relay.py").write_text(RELAY)
    worker = WorkerProcess([gearmand.address], handlers=handlers)
    worker.start(wait_for="relay", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as client:
            assert await client.submit("relay", b"hi", timeout=30) == b"relayed HI"
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]


def test_client_without_servers_reads_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Client() takes servers and timeouts from settings.py; with none configured it uses 127.0.0.1:4730."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEARWORKER_SERVERS", raising=False)
    assert [s.address for s in Client().servers] == ["127.0.0.1:4730"]
    (tmp_path / "settings.py").write_text('SERVERS = ["10.0.0.1:4730", "10.0.0.2:4731"]\nCONNECT_TIMEOUT = 1.5\n')
    client = Client()
    assert [s.address for s in client.servers] == ["10.0.0.1:4730", "10.0.0.2:4731"]
    assert client.connect_timeout == 1.5


def tls_settings(folder: Path, **values: Any) -> config.Settings:
    """Settings with TLS on (support's test CA, a server name to check) and every connection option off its default."""
    return config.Settings(
        tls=True,
        tls_ca_file=str(write_test_ca(folder)),
        tls_server_hostname="gearmand.internal",
        connect_timeout=2.5,
        reconnect_min=0.2,
        reconnect_max=3.0,
        heartbeat_interval=3.0,
        heartbeat_timeout=4.0,
        keepalive_idle=7,
        keepalive_interval=2,
        keepalive_count=5,
        max_packet_size=1 << 20,
        **values,
    ).validate()


def test_a_client_from_settings_connects_with_their_tls_and_connection_options(tmp_path: Path) -> None:
    """Client.from_settings(settings, servers): each server's connection options are the worker's
    (StreamOptions.from_settings): a TLS context that trusts the settings' CA and checks the server name they
    give, and their heartbeat, keepalive, timeouts and packet limit; admin queries dial with the same options.
    A keyword argument overrides one setting; servers None takes the settings' servers."""
    settings = tls_settings(tmp_path, servers=["10.0.0.9:4730"])
    worker = dataclasses.replace(StreamOptions.from_settings(settings), ssl=None)
    client = Client.from_settings(settings, ["10.0.0.1:4730", "10.0.0.2:4731"])
    assert [s.address for s in client.servers] == ["10.0.0.1:4730", "10.0.0.2:4731"]
    assert client.connect_timeout == 2.5
    for server in client.servers:
        options = server.endpoint.options
        assert dataclasses.replace(options, ssl=None) == worker
        assert options.server_hostname == "gearmand.internal"
        context = options.ssl
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert ca_names(context) == [TEST_CA_NAME]

    overridden = Client.from_settings(settings, connect_timeout=9.0, tls_server_hostname="other.internal")
    assert [s.address for s in overridden.servers] == ["10.0.0.9:4730"]
    options = overridden.servers[0].endpoint.options
    assert (options.connect_timeout, options.server_hostname, options.heartbeat_interval) == (9.0, "other.internal", 3)
    assert options.ssl is not None


def test_a_client_given_servers_uses_the_built_in_options_and_reads_no_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Client(servers) reads neither settings.py nor the environment (docs/client.md): no TLS, built-in options;
    Client.from_settings(config.load(), servers) is the way to have them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEARWORKER_HEARTBEAT_INTERVAL", "3")
    write_test_ca(tmp_path)
    (tmp_path / "settings.py").write_text('TLS = True\nTLS_CA_FILE = "ca.pem"\nCONNECT_TIMEOUT = 2.5\n')
    options = Client(["10.0.0.1:4730"]).servers[0].endpoint.options
    assert options == StreamOptions()
    loaded = Client.from_settings(config.load(), ["10.0.0.1:4730"]).servers[0].endpoint.options
    assert loaded.ssl is not None and (loaded.connect_timeout, loaded.heartbeat_interval) == (2.5, 3.0)


def test_the_client_works_on_uvloop(gearmand: Gearmand, workers: Workers) -> None:
    """uvloop (what uvicorn and gearworker run on) has its own transport classes: the client must run there too."""
    import uvloop

    workers.php([gearmand], 2)

    async def main() -> list[bytes]:
        async with Client([gearmand.address]) as client:
            return await asyncio.wait_for(
                asyncio.gather(*(client.submit("php.shuffle", f"{i}") for i in range(50))), 30
            )

    assert uvloop.run(main()) == [f"{i}".encode()[::-1] for i in range(50)]


async def test_a_request_refused_with_error_fails_alone_and_later_replies_stay_in_order(
    gearmand: Gearmand, workers: Workers
) -> None:
    """gearmand answers a unique id over 64 bytes with ERROR instead of JOB_CREATED: that submit raises
    ServerRefused with gearmand's reason, and the jobs submitted around it on the connection get their own results."""
    from gearworker.client import ServerRefused

    workers.php([gearmand], 2)
    async with Client([gearmand.address], max_unique_size=1000) as client:  # let gearmand itself refuse
        before = [asyncio.ensure_future(client.submit("php.shuffle", f"b{i}")) for i in range(10)]
        refused = asyncio.ensure_future(client.submit("php.shuffle", "x", unique="u" * 65))
        refused_bg = asyncio.ensure_future(client.submit_background("php.nobody", "x", unique="v" * 65))
        after = [asyncio.ensure_future(client.submit("php.shuffle", f"a{i}")) for i in range(10)]
        assert await asyncio.gather(*before, *after) == [f"b{i}"[::-1].encode() for i in range(10)] + [
            f"a{i}"[::-1].encode() for i in range(10)
        ]
        for job in (refused, refused_bg):
            with pytest.raises(ServerRefused, match="ARGUMENT_TOO_LARGE"):
                await job
        assert await client.submit("php.echo", "still fine") == b"still fine"


async def test_unique_ids_gearmand_would_mangle_are_refused_before_sending(
    gearmand: Gearmand, workers: Workers
) -> None:
    """gearmand 1.1.20 truncates a 64-byte unique id and prepends a NUL to the workload: the client refuses
    ids over 63 bytes itself, and 63 bytes round-trip intact."""
    workers.php([gearmand])
    async with Client([gearmand.address]) as client:
        with pytest.raises(LocalProtocolError, match="64"):
            await client.submit("php.echo", "ok", unique="u" * 64)
        with pytest.raises(LocalProtocolError):
            await client.submit_background("php.echo", "ok", unique=b"u" * 100)
        assert await client.submit("php.echo", "ok", unique="u" * 63) == b"ok"


async def test_closing_the_client_fails_its_waiting_jobs_instead_of_leaving_them_hanging(
    gearmand: Gearmand, workers: Workers
) -> None:
    """close() with foreground jobs in flight fails them with ConnectionLost; a closed client refuses new jobs."""
    from gearworker.errors import ConnectionLost

    workers.php([gearmand])
    client = Client([gearmand.address])
    job = asyncio.ensure_future(client.submit("php.sleep", "30"))
    for _ in range(200):
        if gearmand.status().get("php.sleep", (0, 0, 0))[1]:
            break
        await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(ConnectionLost, match="closed"):
        await asyncio.wait_for(job, 10)
    with pytest.raises(ConnectionLost, match="closed"):
        await client.submit("php.echo", "x")
