"""The operator console's JSON API (httpx against the ASGI app), with real gearmands and real workers.

The console's promise: with the workers' failed-job store given to the web app, the Failed list shows
each failed job's unique id and error, and its Retry resubmits it (it fails again and is recorded
anew); ``/metrics`` shows ``gearman_up 1`` and ``gearman_jobs_waiting`` of a function no worker
serves equal to the background jobs waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from gearmand import Gearmand
from starlette.applications import Starlette
from support import WorkerProcess, start_worker, wait_until

import gearworker
from gearworker.client import Client
from gearworker.failed import FailedJob, open_store
from gearworker.web import history as history_module
from gearworker.web import workerstats
from gearworker.web.app import ConsoleOptions, create_app
from gearworker.web.console_failed import hexdump, preview

TOKEN = "c0ns0le"
BASE = 1_767_225_600.0  # 2026-01-01T00:00:00Z: when the records below failed


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    """Build an app (its lifespan running) and an httpx client holding the page's token."""
    async with contextlib.AsyncExitStack() as stack:

        async def build(
            servers: list[str], *, started: bool = True, root: Path | None = None, **console: Any
        ) -> tuple[Starlette, httpx.AsyncClient]:
            app = create_app(
                servers,
                storage_root=str(root or tmp_path / "photos"),
                connect_timeout=1.0,
                console=ConsoleOptions(**console),
            )
            if started:
                await stack.enter_async_context(app.router.lifespan_context(app))
            else:
                stack.push_async_callback(app.state.web.close)
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://localhost",
                cookies={"gw_csrf": TOKEN},
                headers={"x-csrf-token": TOKEN},
            )
            stack.push_async_callback(client.aclose)
            return app, client

        yield build


def record(i: int, function: str = "charge", **kw: Any) -> FailedJob:
    fields: dict[str, Any] = {
        "handle": f"H:gm:{i}",
        "unique": f"order-{i}",
        "error": f"ValueError: card declined ({i})",
        "attempts": 3,
        "workload": b'{"id": %d}' % i,
        "workload_size": len(b'{"id": %d}' % i),
        "server": "gm:4730",
        "failed_at": BASE + i,
    }
    fields.update(kw)
    return FailedJob(function, **fields)


async def poll(check: Any, timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: last {value!r}")
        await asyncio.sleep(interval)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    for line in text.splitlines():
        found = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if found:
            have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                return float(found.group(2))
    return None


# -- failed jobs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("store_name", ["failed.db", "failed"])
async def test_the_failed_list_pages_newest_first_and_filters(make: Any, tmp_path: Path, store_name: str) -> None:
    path = tmp_path / store_name
    store = open_store(path)
    ids = [store.add(record(i, "charge" if i % 3 else "resize")) for i in range(12)]
    _, client = await make(["127.0.0.1:1"], failed_jobs=str(path), started=False)

    first = (await client.get("/api/failed?limit=5")).json()
    assert (first["configured"], first["total"], len(first["records"])) == (True, 12, 5)
    assert [r["id"] for r in first["records"]] == ids[::-1][:5]
    assert {"unique", "error", "function", "attempts", "failed_at_utc", "truncated"} <= set(first["records"][0])
    second = (await client.get(f"/api/failed?limit=5&before={first['next']}")).json()
    assert [r["id"] for r in second["records"]] == ids[::-1][5:10]

    resize = (await client.get("/api/failed?function=resize")).json()
    assert [r["unique"] for r in resize["records"]] == ["order-9", "order-6", "order-3", "order-0"]
    text = (await client.get("/api/failed", params={"q": "DECLINED (1"})).json()
    assert sorted(r["unique"] for r in text["records"]) == ["order-1", "order-10", "order-11"]
    recent = (await client.get("/api/failed", params={"since": "2026-01-01T00:00:10Z"})).json()
    assert [r["unique"] for r in recent["records"]] == ["order-11", "order-10"]

    bad = await client.get("/api/failed?since=yesterday")
    assert bad.status_code == 400 and "ISO 8601" in bad.json()["error"]
    if store_name.endswith(".db"):  # an sqlite cursor is a time and an id; a folder's, any name to page below
        gone = await client.get("/api/failed?before=nonsense")
        assert gone.status_code == 400 and "first page" in gone.json()["error"]


async def test_an_sqlite_stores_indexes_are_made_when_the_app_starts_not_at_the_first_page(
    make: Any, tmp_path: Path
) -> None:
    """The first visit of the Failed page does not pay for them (0.2 s at 100,000 records)."""
    import sqlite3

    path = tmp_path / "failed.db"
    open_store(path).add(record(1))

    def indexes() -> set[str]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}

    assert "failed_jobs_time" not in indexes()
    await make(["127.0.0.1:1"], failed_jobs=str(path), sample_history=False)  # started: its lifespan runs

    async def made() -> bool:
        return {"failed_jobs_time", "failed_jobs_function_time", "failed_jobs_handle"} <= indexes()

    await poll(made, timeout=10)


async def test_without_a_store_the_failed_list_says_so(make: Any) -> None:
    _, client = await make(["127.0.0.1:1"], started=False)
    assert (await client.get("/api/failed")).json()["configured"] is False
    assert (await client.get("/api/console")).json()["failed_store"] == {"configured": False, "kind": None}
    r = await client.post("/api/failed/delete", json={"ids": ["1"]})
    assert r.status_code == 409 and "failed_jobs" in r.json()["error"]


async def test_one_record_in_full_shows_its_workload_as_text_or_hex_and_downloads_it(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "failed.db"
    store = open_store(path)
    text_id = store.add(record(1, workload=b'{"order": 1}', workload_size=12))
    binary = b"\xff\xd8\xff\xe0" + bytes(range(40))
    binary_id = store.add(record(2, function="resize", workload=binary, workload_size=len(binary)))
    _, client = await make(["127.0.0.1:1"], failed_jobs=str(path), started=False)

    one = (await client.get(f"/api/failed/{text_id}")).json()
    assert one["workload"] == {"kind": "text", "text": '{"order": 1}', "cut": False, "bytes": 12}
    assert (one["error"], one["attempts"], one["server"], one["handle"]) == (
        "ValueError: card declined (1)",
        3,
        "gm:4730",
        "H:gm:1",
    )
    other = (await client.get(f"/api/failed/{binary_id}")).json()
    assert other["workload"]["kind"] == "hex"
    assert other["workload"]["hex"].startswith("00000000  ff d8 ff e0 00 01 02 03")
    download = await client.get(other["workload_url"])
    assert download.content == binary
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"] == f'attachment; filename="failed-{binary_id}-resize.bin"'
    assert (await client.get("/api/failed/99999")).status_code == 404
    assert (await client.get("/api/failed/..%2Fetc")).status_code == 404


def test_workload_previews_are_text_when_printable_else_a_hex_dump() -> None:
    assert preview("héllo\n".encode())["kind"] == "text"
    assert preview(b"\x00\x01text")["kind"] == "hex"
    long_text = ("é" * 40000).encode()  # 80,000 bytes: the preview cuts it, not in the middle of a character
    cut = preview(long_text)
    assert (cut["kind"], cut["cut"]) == ("text", True) and cut["text"] == "é" * 32768
    assert hexdump(b"AB\x00") == "00000000  41 42 00" + " " * 39 + "  |AB.|"


async def test_delete_by_selection_and_by_filter_is_logged_with_its_count(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "failed"
    store = open_store(path)
    ids = [store.add(record(i, "charge" if i % 2 else "resize")) for i in range(8)]
    _, client = await make(["127.0.0.1:1"], failed_jobs=str(path), started=False)
    with structlog.testing.capture_logs() as logs:
        r = await client.post("/api/failed/delete", json={"ids": [ids[0], ids[1]]})
        assert r.json() == {"deleted": 2}
        r = await client.post("/api/failed/delete", json={"filter": {"function": "charge"}})
        assert r.json() == {"deleted": 3}
    left = (await client.get("/api/failed")).json()
    assert sorted(rec["id"] for rec in left["records"]) == sorted(ids[2::2])
    deleted = [e for e in logs if e["event"] == "web.failed.deleted"]
    assert [(e["count"], e["by"]) for e in deleted] == [(2, "ids"), (3, "filter")]
    assert deleted[1]["filter"] == {"function": "charge"}

    for body, status in (
        ({}, 400),
        ({"ids": ["1"], "filter": {}}, 400),
        ({"ids": "1"}, 400),
        ({"ids": [str(i) for i in range(1001)]}, 413),
        ({"filter": {"since": "soon"}}, 400),
    ):
        assert (await client.post("/api/failed/delete", json=body)).status_code == status, body
    r = await client.post("/api/failed/delete", content=b"ids=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415


async def test_retry_and_delete_need_the_token_and_the_login(make: Any, tmp_path: Path) -> None:
    """The new POSTs pass the same Guard as every other: the CSRF token, the Origin, the login."""
    from gearworker.web.login import hash_password

    path = tmp_path / "failed.db"
    job_id = open_store(path).add(record(1))
    app = create_app(["127.0.0.1:1"], storage_root=str(tmp_path / "p"), console=ConsoleOptions(failed_jobs=str(path)))
    stored = hash_password("correct horse")
    locked = create_app(
        ["127.0.0.1:1"],
        storage_root=str(tmp_path / "q"),
        password_hash=stored,
        console=ConsoleOptions(failed_jobs=str(path)),
    )
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            for route in ("/api/failed/retry", "/api/failed/delete"):
                c.cookies.set("gw_csrf", TOKEN)
                no_token = await c.post(route, json={"ids": [job_id]})
                assert no_token.status_code == 403
                other_site = await c.post(
                    route, json={"ids": [job_id]}, headers={"x-csrf-token": TOKEN, "origin": "http://evil.example"}
                )
                assert other_site.status_code == 403
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=locked),
            base_url="http://localhost",
            cookies={"gw_csrf": TOKEN},
            headers={"x-csrf-token": TOKEN},
        ) as c:
            for method, route in (("POST", "/api/failed/delete"), ("GET", "/api/failed")):
                r = await c.request(method, route, json={"ids": [job_id]} if method == "POST" else None)
                assert r.status_code == 401, route
            assert (await c.get("/metrics")).status_code == 303  # to the login page, as every page
            c.cookies.set("gw_login", locked.state.web.logins.start(stored))  # a login, as POST /api/login makes
            assert (await c.get("/api/failed")).json()["total"] == 1
        assert open_store(path).get(job_id).id == job_id  # nothing refused was done
    finally:
        await app.state.web.close()
        await locked.state.web.close()


async def test_retry_resubmits_a_failed_job_the_worker_fails_again_and_records_anew(
    make: Any, gearmand: Gearmand, tmp_path: Path
) -> None:
    """The console's promise: the Failed list shows the job's unique id and error; Retry runs it again, for real."""
    path = tmp_path / "failed.db"
    worker = start_worker(
        [gearmand.address],
        "--processes",
        "1",
        env={"GEARWORKER_FAILED_JOBS": str(path)},
        wait_for="fail",
        gearmand=gearmand,
    )
    try:
        async with Client([gearmand.address]) as gm:
            await gm.submit_background("fail", b"pay order 7", unique="order-7")
        _, client = await make([gearmand.address], failed_jobs=str(path))

        async def listed() -> list[dict[str, Any]]:
            return list((await client.get("/api/failed")).json()["records"])

        (first,) = await poll(listed)
        assert first["unique"] == "order-7"
        assert first["error"] == "RuntimeError: fail was asked to fail (11 bytes)"
        with structlog.testing.capture_logs() as logs:
            r = await client.post("/api/failed/retry", json={"ids": [first["id"]]})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert (answer["retried"], answer["skipped"], answer["missing"]) == (1, 0, 0)
        assert answer["results"][0]["handle"].startswith("H:")
        assert [(e["event"], e["count"]) for e in logs if e["event"] == "web.failed.retried"] == [
            ("web.failed.retried", 1)
        ]

        async def recorded_anew() -> list[dict[str, Any]]:
            rows = await listed()
            return rows if rows and all(row["id"] != first["id"] for row in rows) else []

        (again,) = await poll(recorded_anew)
        assert (again["unique"], again["error"]) == ("order-7", first["error"])
        assert again["handle"] == answer["results"][0]["handle"]  # the resubmitted job's record
    finally:
        worker.stop()


async def test_retry_of_everything_matching_a_filter_skips_cut_workloads(
    make: Any, gearmand: Gearmand, tmp_path: Path
) -> None:
    """Filter retries go newest first from the request's start; a record that kept part of its workload stays."""
    path = tmp_path / "failed"
    store = open_store(path, workload_limit=4)
    kept = [store.add(record(i, "nobody_serves", workload=b"abc", workload_size=3)) for i in range(3)]
    cut = store.add(record(9, "nobody_serves", workload=b"abcdefgh", workload_size=8))
    other = store.add(record(5, "charge", workload=b"x", workload_size=1))
    _, client = await make([gearmand.address], failed_jobs=str(path), started=False)
    r = await client.post("/api/failed/retry", json={"filter": {"function": "nobody_serves"}})
    answer = r.json()
    assert (answer["retried"], answer["skipped"], answer["remaining"]) == (3, 1, 0)
    assert [x["id"] for x in answer["results"] if "handle" not in x] == [cut]
    assert gearmand.status()["nobody_serves"][0] == 3  # queued: no worker serves it
    left = {rec["id"] for rec in (await client.get("/api/failed")).json()["records"]}
    assert left == {cut, other} and not left & set(kept)


async def test_odd_numbers_and_a_string_force_are_plain_400s_that_change_nothing(make: Any, tmp_path: Path) -> None:
    """``limit=²`` is a digit to str.isdigit but not a number; ``"force": "false"`` is not a boolean (and, read
    as truthy, would retry a record that kept only part of its workload)."""
    path = tmp_path / "failed.db"
    cut = open_store(path, workload_limit=4).add(record(1, workload=b"abcd", workload_size=8))
    _, client = await make(["127.0.0.1:1"], failed_jobs=str(path), started=False)
    for query in ("limit=\u00b2", "limit=-1", "limit=1e3"):
        r = await client.get(f"/api/failed?{query}")
        assert r.status_code == 400 and "is not a number" in r.json()["error"], query
    r = await client.post("/api/failed/retry", json={"ids": [cut], "force": "false"})
    assert r.status_code == 400 and r.json()["error"] == "force must be true or false."
    assert (await client.get("/api/failed")).json()["total"] == 1


async def test_a_record_the_client_refuses_to_submit_fails_alone_and_the_others_are_retried_once(
    make: Any, gearmand: Gearmand, tmp_path: Path
) -> None:
    """A unique id over gearmand's 63 bytes is refused before anything is sent: that record stays, with the
    reason, and the batch's other records are submitted and deleted (a failed batch would keep them, and the
    next click would submit them twice)."""
    path = tmp_path / "failed.db"
    store = open_store(path)
    good = store.add(record(1, "nobody_serves"))
    long_id = store.add(record(2, "nobody_serves", unique="u" * 70))
    _, client = await make([gearmand.address], failed_jobs=str(path), started=False)
    r = await client.post("/api/failed/retry", json={"ids": [good, long_id]})
    answer = r.json()
    assert r.status_code == 200 and answer["retried"] == 1
    refused = [x for x in answer["results"] if "handle" not in x]
    assert [x["id"] for x in refused] == [long_id] and "LocalProtocolError" in refused[0]["problem"]
    assert gearmand.status()["nobody_serves"][0] == 1  # queued once: no worker serves it
    left = {rec["id"] for rec in (await client.get("/api/failed")).json()["records"]}
    assert left == {long_id}


async def test_retry_with_no_job_server_up_keeps_the_records_and_says_so(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "failed.db"
    job_id = open_store(path).add(record(1))
    _, client = await make(["127.0.0.1:1"], failed_jobs=str(path), started=False)
    r = await client.post("/api/failed/retry", json={"ids": [job_id]})
    assert r.status_code == 503 and r.json()["error"].startswith("Nothing was retried: no job server took the jobs")
    assert (await client.get("/api/failed")).json()["total"] == 1


async def test_a_job_row_can_find_its_failure_record_by_handle(make: Any, tmp_path: Path) -> None:
    """What a background job's row needs to say "Failed (recorded)": the record of its handle, since it was sent."""
    path = tmp_path / "failed.db"
    open_store(path).add(record(3, handle="H:gm:77", failed_at=time.time()))
    app, client = await make(["127.0.0.1:1"], failed_jobs=str(path), started=False)
    console = app.state.console
    found = await console.recorded_failure("H:gm:77", since=time.time() - 60)
    assert found is not None and found["unique"] == "order-3"
    assert await console.recorded_failure("H:gm:77", since=time.time() + 60) is None
    assert (await client.get("/api/failed?handle=H:gm:77")).json()["total"] == 1


# -- queues, history, workers, metrics ---------------------------------------------------------------------


async def test_metrics_show_gearman_up_and_the_jobs_waiting_for_a_function_no_worker_serves(
    make: Any, gearmand: Gearmand, tmp_path: Path
) -> None:
    """Autoscalers' view, with the common exporter's names, plus the failed-store counts per function."""
    path = tmp_path / "failed.db"
    store = open_store(path)
    for i in range(2):
        store.add(record(i, "charge"))
    async with Client([gearmand.address]) as gm:
        for i in range(4):
            await gm.submit_background("nobody_serves", b"x", unique=f"wait-{i}")
    _, client = await make([gearmand.address, "127.0.0.1:1"], failed_jobs=str(path), started=False)
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    here, there = gearmand.address, "127.0.0.1:1"
    assert metric(text, "gearman_up", server=here) == 1
    assert metric(text, "gearman_up", server=there) == 0
    assert metric(text, "gearman_jobs_waiting", server=here, function="nobody_serves") == 4
    assert metric(text, "gearman_jobs", server=here, function="nobody_serves") == 4
    assert metric(text, "gearman_jobs_running", server=here, function="nobody_serves") == 0
    assert metric(text, "gearman_workers", server=here, function="nobody_serves") == 0
    assert metric(text, "gearman_version_info", server=here) == 1
    assert metric(text, "gearworker_failed_jobs", function="charge") == 2
    assert metric(text, "gearworker_failed_store_up") == 1
    assert "# TYPE gearman_jobs_waiting gauge" in text


async def test_metrics_listen_without_a_login_on_their_own_address_while_the_app_asks_for_it(
    make: Any, gearmand: Gearmand, tmp_path: Path
) -> None:
    """web_metrics: Prometheus scrapes there without a login; the app's own port keeps its login."""
    from gearmand import free_port

    from gearworker.web.login import hash_password

    port = free_port()
    app = create_app(
        [gearmand.address],
        storage_root=str(tmp_path / "photos"),
        password_hash=hash_password("correct horse"),
        console=ConsoleOptions(metrics_listen=f"127.0.0.1:{port}", sample_history=False),
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(trust_env=False) as plain:
            r = await plain.get(f"http://127.0.0.1:{port}/metrics")
            assert r.status_code == 200 and metric(r.text, "gearman_up", server=gearmand.address) == 1
            assert (await plain.get(f"http://127.0.0.1:{port}/healthz")).text == "ok\n"
            assert (await plain.get(f"http://127.0.0.1:{port}/api/failed")).status_code == 404  # nothing else
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            assert (await c.get("/metrics")).headers["location"] == "/login"  # the app's port asks for the login
    with pytest.raises(httpx.ConnectError):  # closed with the app
        async with httpx.AsyncClient(trust_env=False) as plain:
            await plain.get(f"http://127.0.0.1:{port}/metrics")


async def test_queues_count_waiting_as_total_minus_running(make: Any, gearmand: Gearmand, tmp_path: Path) -> None:
    """One running job is running 1, waiting 0 (gearmand's own "queued" would say 1)."""
    worker = start_worker([gearmand.address], "--processes", "1", wait_for="slow", gearmand=gearmand)
    try:
        async with Client([gearmand.address]) as gm:
            await gm.submit_background("slow", b"5")
            await gm.submit_background("nobody_serves", b"x")
        _, client = await make([gearmand.address], started=False)

        async def slow_running() -> dict[str, Any] | None:
            body = (await client.get("/api/queues")).json()
            rows = {f["function"]: f for f in body["functions"]}
            return body if rows.get("slow", {}).get("running") == 1 else None

        body = await poll(slow_running)
        rows = {f["function"]: f for f in body["functions"]}
        assert {k: rows["slow"][k] for k in ("total", "waiting", "running")} == {"total": 1, "waiting": 0, "running": 1}
        assert rows["slow"]["workers"] >= 1 and rows["slow"]["failed_records"] is None
        assert {k: rows["nobody_serves"][k] for k in ("waiting", "running", "workers")} == {
            "waiting": 1,
            "running": 0,
            "workers": 0,
        }
        (server,) = body["servers"]
        assert server["ok"] and {f["function"] for f in server["functions"]} >= {"slow", "nobody_serves"}
        assert body["worker_metrics"] is None
    finally:
        worker.stop()


async def test_queue_history_survives_an_app_restart(
    make: Any, gearmand: Gearmand, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sampled every second into the storage root's sqlite file; a new app reads the same hour and day."""
    monkeypatch.setattr(history_module, "FLUSH_EVERY", 1.0)
    async with Client([gearmand.address]) as gm:
        for i in range(3):
            await gm.submit_background("nobody_serves", b"x", unique=f"h-{i}")
    root = tmp_path / "photos"
    first = create_app([gearmand.address], storage_root=str(root), console=ConsoleOptions())
    async with first.router.lifespan_context(first):
        await poll(lambda: _samples(first), timeout=20)
    assert (root / "queue-history.db").is_file()
    _, client = await make([gearmand.address], root=root, started=False)  # a restart: nothing sampled yet
    hour = (await client.get("/api/queues/history?function=nobody_serves&span=hour")).json()
    assert hour["step"] == 1 and len(hour["t"]) >= 2
    assert set(hour["waiting"]) == {3} and set(hour["running"]) == {0} and set(hour["workers"]) == {0}
    assert hour["t"] == sorted(hour["t"]) and "nobody_serves" in hour["functions"]
    day = (await client.get("/api/queues/history?span=day&server=" + gearmand.address)).json()
    assert day["step"] == 60 and day["waiting"][-1] == 3.0 and day["waiting_max"][-1] == 3
    assert (await client.get("/api/queues/history?span=week")).status_code == 400
    none = (await client.get("/api/queues/history?function=no_such_function")).json()
    assert none["t"] == []


async def _samples(app: Starlette) -> bool:
    return bool(app.state.console.history.samples >= 3)


async def test_workers_are_grouped_by_host_with_pid_and_version(make: Any, gearmand: Gearmand) -> None:
    workers = [
        start_worker([gearmand.address], "--processes", "1", "--client-id", name) for name in ("host-a", "host-b")
    ]
    try:
        for w in workers:
            w.wait_registered(gearmand, "echo", workers=2)
        _, client = await make([gearmand.address], started=False)
        body = (await client.get("/api/workers")).json()
        assert body["servers"] == [
            {"address": gearmand.address, "ok": True, "error": None, "clients": body["servers"][0]["clients"]}
        ]
        hosts = {h["host"]: h for h in body["hosts"]}
        assert set(hosts) >= {"host-a", "host-b"}
        for name, worker in zip(("host-a", "host-b"), workers, strict=True):
            (process,) = hosts[name]["processes"]
            assert (process["pid"], process["version"], process["gearworker"]) == (
                worker.pid,
                gearworker.__version__,
                True,
            )
            assert {"echo", "fail", "resize"} <= set(process["functions"]) and process["connections"] >= 2
            assert process["servers"] == [gearmand.address] and process["addresses"] == ["127.0.0.1"]
    finally:
        for w in workers:
            w.stop()


async def test_workers_of_other_clients_are_grouped_by_their_address(make: Any, gearmand: Gearmand) -> None:
    from support import GEARMAN

    proc = await asyncio.create_subprocess_exec(
        GEARMAN, "-w", "-h", "127.0.0.1", "-p", str(gearmand.port), "-f", "cli_fn", "--", "cat"
    )
    try:
        await asyncio.to_thread(wait_until, lambda: gearmand.status().get("cli_fn", (0, 0, 0))[2] == 1)
        _, client = await make([gearmand.address], started=False)
        hosts = {h["host"]: h for h in (await client.get("/api/workers")).json()["hosts"]}
        (process,) = [p for p in hosts["127.0.0.1"]["processes"] if "cli_fn" in p["functions"]]
        assert (process["gearworker"], process["pid"], process["version"]) == (False, None, None)
    finally:
        proc.kill()
        await proc.wait()


async def test_queues_show_rates_and_run_times_from_the_workers_metrics(
    make: Any, gearmand: Gearmand, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gearmand import free_port

    monkeypatch.setattr(workerstats, "SCRAPE_EVERY", 0.3)
    address = f"127.0.0.1:{free_port()}"
    worker = start_worker(
        [gearmand.address], "--processes", "1", "--metrics", address, wait_for="echo", gearmand=gearmand
    )
    try:
        _, client = await make([gearmand.address], worker_metrics=(address, "127.0.0.1:1"))
        await asyncio.sleep(0.8)  # a first scrape before the jobs
        async with Client([gearmand.address]) as gm:
            await asyncio.gather(*(gm.submit("echo", b"hi") for _ in range(20)))
            for _ in range(3):
                with contextlib.suppress(Exception):
                    await gm.submit("fail", b"x")

        async def rates() -> dict[str, Any] | None:
            body = (await client.get("/api/queues")).json()
            rows = {f["function"]: f for f in body["functions"]}
            echo, fail = rows.get("echo", {}), rows.get("fail", {})
            return body if echo.get("done_per_s", 0) > 0 and fail.get("failed_per_s", 0) > 0 else None

        body = await poll(rates, timeout=20)
        rows = {f["function"]: f for f in body["functions"]}
        assert rows["echo"]["p50"] is not None and 0 < rows["echo"]["p50"] <= rows["echo"]["p95"] < 1
        assert rows["echo"]["failed_per_s"] == 0
        scraped = {w["address"]: w for w in body["worker_metrics"]["workers"]}
        assert scraped[address]["ok"] and not scraped["127.0.0.1:1"]["ok"]
        assert body["worker_metrics"]["window"] > 0
    finally:
        worker.stop()


# -- photos -------------------------------------------------------------------------------------------------


async def test_a_failed_photo_is_resized_again_from_its_original(make: Any, gearmand: Gearmand, tmp_path: Path) -> None:
    import io

    from support import photo_jpeg

    from gearworker.web.photos import Photo, new_id
    from gearworker.web.storage import PhotoStore

    root = tmp_path / "photos"
    image = io.BytesIO(photo_jpeg(640, 480, fill=(30, 90, 200), quality=75))
    photo = Photo(
        id=new_id(),
        key="",
        name="cut.jpg",
        upload_bytes=len(image.getvalue()),
        state="failed",
        error="The connection to the job server was lost while the job ran.",
    )
    PhotoStore(root).add(photo, image)  # a resize that failed (gearmand restarted mid-job)
    app, client = await make([gearmand.address], root=root)
    assert (await client.post(f"/api/photos/{new_id()}/retry")).status_code == 404
    worker = WorkerProcess([gearmand.address], args=["--processes", "1"])
    worker.start(wait_for="resize", gearmand=gearmand, timeout=60)
    try:
        r = await client.post(f"/api/photos/{photo.id}/retry")
        assert r.status_code == 202 and r.json()["state"] == "queued" and r.json()["error"] is None
        assert (await client.post(f"/api/photos/{photo.id}/retry")).status_code == 409  # already going again
        web = app.state.web
        await asyncio.wait_for(asyncio.gather(*web.tasks), timeout=60)
        kept = web.photos.get(photo.id)
        assert kept is not None and (kept.state, kept.error, len(kept.copies)) == ("done", None, 3)
    finally:
        worker.stop()
    (root / photo.id / "original").unlink()
    kept.state = "failed"
    assert (await client.post(f"/api/photos/{photo.id}/retry")).status_code == 410


# -- the exporter alone ---------------------------------------------------------------------------------


def test_gearworker_exporter_serves_the_same_metrics_alone(gearmand: Gearmand, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from gearmand import free_port
    from support import ROOT, clean_env

    path = tmp_path / "failed"
    open_store(path).add(record(1, "charge"))
    gearmand.admin("maxqueue nobody_serves 100")
    subprocess.run(
        ["gearman", "-h", "127.0.0.1", "-p", str(gearmand.port), "-b", "-f", "nobody_serves", "x"], check=True
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearworker",
            "exporter",
            "--listen",
            str(port),
            "--server",
            gearmand.address,
            "--store",
            str(path),
        ],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        text = wait_until(lambda: _get(f"http://127.0.0.1:{port}/metrics"), 20, what="the exporter to answer")
        assert text is not None
        assert metric(text, "gearman_up", server=gearmand.address) == 1
        assert metric(text, "gearman_jobs_waiting", server=gearmand.address, function="nobody_serves") == 1
        assert metric(text, "gearworker_failed_jobs", function="charge") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(url: str) -> str | None:
    try:
        r = httpx.get(url, timeout=2, trust_env=False)
    except httpx.TransportError:
        return None
    return r.text if r.status_code == 200 else None


def test_the_console_takes_the_failed_store_and_metrics_addresses_from_the_settings() -> None:
    from gearworker import config
    from gearworker.errors import ConfigError

    settings = config.load(
        env={
            "GEARWORKER_FAILED_JOBS": "/var/lib/gearworker/failed.db",
            "GEARWORKER_WEB_WORKER_METRICS": "w1:9100,w2:9100",
            "GEARWORKER_WEB_METRICS": "9418",
        }
    )
    assert ConsoleOptions.from_settings(settings) == ConsoleOptions(
        failed_jobs="/var/lib/gearworker/failed.db", worker_metrics=("w1:9100", "w2:9100"), metrics_listen="9418"
    )
    with pytest.raises(ConfigError, match="web_worker_metrics"):
        config.load(env={"GEARWORKER_WEB_WORKER_METRICS": "w1:http"})
