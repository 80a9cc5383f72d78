"""The web app without a browser: httpx against the ASGI app, with real gearmands.

Cheaper than the browser tests, so the edge cases live here: the upload
limit, paths that try to leave the app's folders, and the plain-words errors
when no job server is up or a job fails.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from gearmand import Gearmand, free_port
from starlette.applications import Starlette
from support import TEST_CA_NAME, ca_names, photo_jpeg, write_test_ca

from gearworker.config import Settings
from gearworker.web.app import WebOptions, create_app
from gearworker.web.service import Gateway

SESSION = "testsession01"


CSRF = "test-csrf-token"


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[Any]:
    """Build an app for some servers and an httpx client talking to it in-process.

    The client holds the page's security token (cookie and header), as the page does; photos go to a
    fresh storage root under ``tmp_path``.
    """
    made: list[tuple[Starlette, httpx.AsyncClient]] = []

    async def make(servers: list[str], **kwargs: Any) -> tuple[Starlette, httpx.AsyncClient]:
        kwargs.setdefault("storage_root", str(tmp_path / "photos"))
        app = create_app(servers, **kwargs)
        await asyncio.to_thread(app.state.web.photos.load)  # what the lifespan does at start-up
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://localhost",
            cookies={"gw_csrf": CSRF},
            headers={"x-csrf-token": CSRF},
        )
        made.append((app, client))
        return app, client

    yield make
    for app, client in made:
        await client.aclose()
        await app.state.web.close()  # what the app's lifespan does at shutdown


async def events(app: Starlette, session: str = SESSION) -> list[tuple[str, dict[str, Any]]]:
    """Wait for the app's jobs to end, then read this boot's events for the page (its own and broadcast)."""
    web = app.state.web
    await asyncio.wait_for(asyncio.gather(*web.tasks), timeout=30)
    web.hub.close()
    out = []
    async for chunk in web.hub.stream(session, f"{web.hub.boot}-0"):
        lines = dict(line.split(": ", 1) for line in chunk.strip().splitlines() if ": " in line)
        if "event" in lines and lines["event"] != "hello":
            out.append((lines["event"], json.loads(lines["data"])))
    return out


async def asgi_get(app: Starlette, raw_path: bytes) -> tuple[int, bytes]:
    """GET with a raw, un-normalised path (httpx would resolve ``..`` before sending)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 1),
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


# -- uploads --------------------------------------------------------------------


async def test_upload_over_the_limit_is_refused_with_413_in_plain_words(make_client: Any) -> None:
    app, client = await make_client(["127.0.0.1:1"], max_upload_bytes=10_000)
    big = photo_jpeg(64, 48, fill=(200, 80, 40), quality=75) + b"\0" * 200_000
    r = await client.post(f"/api/photos?session={SESSION}", files={"photo": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413
    assert r.json()["error"] == "That file is too big: photos may be up to 9.8 KB."
    assert not app.state.web.tasks


async def test_upload_limit_is_enforced_while_reading_even_without_content_length(make_client: Any) -> None:
    """A chunked upload (no Content-Length) is cut off as soon as it passes the limit."""
    _, client = await make_client(["127.0.0.1:1"], max_upload_bytes=10_000)
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'--x\r\nContent-Disposition: form-data; name="photo"; filename="a.jpg"\r\n\r\n'
        for _ in range(1000):
            sent += 1
            yield b"\xff" * 1024
        yield b"\r\n--x--\r\n"

    r = await client.post(
        f"/api/photos?session={SESSION}", content=body(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert r.status_code == 413
    assert "too big" in r.json()["error"]


async def test_a_file_that_is_not_an_image_is_refused_in_plain_words(make_client: Any) -> None:
    _, client = await make_client(["127.0.0.1:1"])
    r = await client.post(f"/api/photos?session={SESSION}", files={"photo": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 415
    assert r.json()["error"] == "“notes.txt” is not an image we can read (we take JPEG, PNG, WebP, GIF or TIFF)."


async def test_an_upload_without_a_file_or_session_says_what_is_missing(make_client: Any) -> None:
    _, client = await make_client(["127.0.0.1:1"])
    r = await client.post(f"/api/photos?session={SESSION}", data={"key": "p1"})
    assert (r.status_code, r.json()["error"]) == (400, "No file was sent: choose a photo to upload.")
    r = await client.post(
        "/api/photos?session=../x",
        files={"photo": ("a.jpg", photo_jpeg(64, 48, fill=(200, 80, 40), quality=75), "image/jpeg")},
    )
    assert r.status_code == 400 and "reload the page" in r.json()["error"]


# -- nothing served outside the app's own folders -------------------------------------------


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/static/../app.py",
        b"/static/%2e%2e/app.py",
        b"/static/..%2fapp.py",
        b"/static/../../config.py",
        b"/static//etc/passwd",
        b"/static/%2fetc%2fpasswd",
        b"/static/../../../../../../etc/passwd",
        b"/photos/../../etc/passwd",
        b"/photos/..%2f..%2fetc%2fpasswd/0",
        b"/photos/00000000000000000000000000000000/0",
        b"/photos/not-an-id/0",
        b"/photos/00000000000000000000000000000000/-1",
        b"/../pyproject.toml",
    ],
)
async def test_paths_outside_the_apps_folders_are_404(make_client: Any, raw_path: bytes) -> None:
    app, _ = await make_client(["127.0.0.1:1"])
    status, body = await asgi_get(app, raw_path)
    assert status == 404, body
    assert b"import" not in body and b"root:" not in body and b"[project]" not in body


async def test_static_files_and_the_page_are_served(make_client: Any) -> None:
    _, client = await make_client(["127.0.0.1:1"])
    page = await client.get("/")
    assert page.status_code == 200 and "<title>gearworker</title>" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = await client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]


# -- errors in plain words --------------------------------------------------------


async def test_no_server_up_shows_no_job_server_reachable(make_client: Any) -> None:
    dead = f"127.0.0.1:{free_port()}"
    app, client = await make_client([dead], connect_timeout=1.0)
    status = (await client.get("/api/servers")).json()
    assert status["servers"] == [
        {"address": dead, "ok": False, "functions": [], "error": f"No job server reachable at {dead}."}
    ]
    r = await client.post(f"/api/jobs?session={SESSION}", json={"function": "echo", "payload": "x"})
    assert r.status_code == 202
    r = await client.post(
        f"/api/photos?session={SESSION}",
        files={"photo": ("a.jpg", photo_jpeg(64, 48, fill=(200, 80, 40), quality=75), "image/jpeg")},
    )
    assert r.status_code == 202
    finals = {e[1].get("function") or e[1]["name"]: e[1] for e in await events(app)}
    assert finals["echo"]["state"] == "failed"
    assert finals["echo"]["error"] == f"No job server reachable at {dead}."
    assert finals["a.jpg"]["state"] == "failed"
    assert finals["a.jpg"]["error"] == f"No job server reachable at {dead}."


async def test_one_server_down_is_shown_unreachable_next_to_one_that_is_up(
    make_client: Any, gearmand: Gearmand
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    _, client = await make_client([gearmand.address, dead], connect_timeout=1.0)
    servers = {s["address"]: s for s in (await client.get("/api/servers")).json()["servers"]}
    assert servers[gearmand.address]["ok"] and servers[gearmand.address]["error"] is None
    assert not servers[dead]["ok"] and servers[dead]["error"] == f"No job server reachable at {dead}."


@pytest.fixture
def cli_worker(gearmand: Gearmand) -> Iterator[Gearmand]:
    """gearman-tools' CLI worker: ``echo`` runs cat, ``fails`` runs false."""
    procs = [
        subprocess.Popen(
            ["gearman", "-h", "127.0.0.1", "-p", str(gearmand.port), "-w", "-f", f, "--", *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for f, cmd in (("echo", ["cat"]), ("fails", ["false"]))
    ]
    try:
        for _ in range(200):
            if {"echo", "fails"} <= {f for f, (_, _, w) in gearmand.status().items() if w}:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        yield gearmand
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def test_jobs_form_runs_copies_in_parallel_and_lists_results(make_client: Any, cli_worker: Gearmand) -> None:
    app, client = await make_client([cli_worker.address])
    functions = (await client.get("/api/servers")).json()["functions"]
    assert {"echo", "fails"} <= set(functions)
    r = await client.post(
        f"/api/jobs?session={SESSION}", json={"function": "echo", "payload": "héllo", "copies": 3, "priority": "high"}
    )
    assert r.status_code == 202 and len(r.json()["jobs"]) == 3
    finals = {d["id"]: d for kind, d in await events(app) if kind == "job"}
    boot = app.state.web.hub.boot  # row ids start with the boot id: unique across restarts of the app
    assert sorted(finals) == [f"{boot}-b1-1", f"{boot}-b1-2", f"{boot}-b1-3"]
    for row in finals.values():
        assert row["state"] == "done" and row["result"] == {"text": "héllo", "bytes": 6, "binary": False}


async def test_a_failed_job_is_shown_as_the_job_failed(make_client: Any, cli_worker: Gearmand) -> None:
    app, client = await make_client([cli_worker.address])
    await client.post(f"/api/jobs?session={SESSION}", json={"function": "fails", "payload": "x"})
    (row,) = {d["id"]: d for kind, d in await events(app) if kind == "job"}.values()
    assert row["state"] == "failed"
    assert row["error"].startswith("The job failed")


async def test_background_job_shows_its_handle_then_that_it_finished(make_client: Any, cli_worker: Gearmand) -> None:
    app, client = await make_client([cli_worker.address])
    await client.post(f"/api/jobs?session={SESSION}", json={"function": "echo", "payload": "bg", "background": True})
    states = [d for kind, d in await events(app) if kind == "job"]
    assert states[-1]["state"] == "finished"
    assert states[-1]["handle"].startswith("H:")
    assert any(s["handle"] and s["state"] in ("queued", "running") for s in states)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"function": "", "payload": "x"}, "Choose a function to run."),
        ({"function": "echo", "copies": 0}, "Copies must be between 1 and 100."),
        ({"function": "echo", "copies": 101}, "Copies must be between 1 and 100."),
        ({"function": "echo", "priority": "urgent"}, "Priority must be one of: normal, high, low."),
        ({"function": "two words"}, "A function name is one word of printable characters, at most 255."),
    ],
)
async def test_a_bad_jobs_form_is_refused_in_plain_words(make_client: Any, form: dict[str, Any], message: str) -> None:
    _, client = await make_client(["127.0.0.1:1"])
    r = await client.post(f"/api/jobs?session={SESSION}", json=form)
    assert (r.status_code, r.json()["error"]) == (400, message)


def test_explain_turns_errors_into_sentences() -> None:
    from gearworker.errors import ConnectionLost, JobFailed, JobTimeout, NoServerAvailable
    from gearworker.web.service import explain

    servers = ["a:1", "b:2"]
    assert explain(NoServerAvailable("x"), servers) == "No job server reachable at a:1, b:2."
    assert explain(JobFailed("ValueError: bad"), servers) == "The job failed: ValueError: bad"
    assert explain(JobFailed(""), servers) == "The job failed (the worker gave no reason)."
    assert explain(JobTimeout("t"), servers) == "The job took too long: no worker finished it in time."
    assert "was lost" in explain(ConnectionLost("x"), servers)


def test_gateway_reports_each_configured_server() -> None:
    assert Gateway(["h:1", "h:2"]).servers == ["h:1", "h:2"]


async def test_the_app_gearworker_web_builds_connects_with_the_settings_tls(tmp_path: Path) -> None:
    """``gearworker web``'s app (WebOptions.from_settings): its client dials each server with the settings' TLS
    context, server name and heartbeat.  An app built without settings keeps the built-in options (no TLS)."""
    settings = Settings(
        tls=True,
        tls_ca_file=str(write_test_ca(tmp_path)),
        tls_server_hostname="gearmand.internal",
        heartbeat_interval=3.0,
        connect_timeout=1.5,
        web_storage_root=str(tmp_path / "photos"),
    ).validate()
    app = create_app(["10.0.0.1:4730", "10.0.0.2:4730"], WebOptions.from_settings(settings, listen_host="127.0.0.1"))
    plain = create_app(["10.0.0.1:4730"], storage_root=str(tmp_path / "plain"))
    try:
        client = await app.state.web.gateway.client()  # connections open on first use: none here
        for server in client.servers:
            options = server.endpoint.options
            assert options.ssl is not None and ca_names(options.ssl) == [TEST_CA_NAME]
            assert (options.server_hostname, options.heartbeat_interval, options.connect_timeout) == (
                "gearmand.internal",
                3.0,
                1.5,
            )
        assert (await plain.state.web.gateway.client()).servers[0].endpoint.options.ssl is None
    finally:
        await app.state.web.close()
        await plain.state.web.close()


# -- pieces: live-stream replay, the photo store, downloads, the command line ----------------


async def test_a_reconnecting_page_gets_only_the_events_it_missed() -> None:
    """EventSource resends Last-Event-ID; events published before any stream was open are kept too."""
    from gearworker.web.events import Hub

    hub = Hub(boot="0badc0de")
    for n in range(3):
        hub.publish(SESSION, "job", {"n": n})
    hub.publish("othersession1", "job", {"n": 99})
    hub.close()
    chunks = [c async for c in hub.stream(SESSION, "0badc0de-1")]
    assert chunks[1] == 'event: hello\ndata: {"boot":"0badc0de"}\n\n'
    assert [json.loads(c.split("data: ")[1]) for c in chunks[2:]] == [{"n": 1}, {"n": 2}]
    assert chunks[2].startswith("id: 0badc0de-2\nevent: job\n")


def test_each_view_has_a_larger_revision_than_every_view_before_it() -> None:
    """Views taken in one microsecond still order, and a photo's and a job's share one sequence."""
    from gearworker.web.jobs import JobRow
    from gearworker.web.photos import Photo

    photo = Photo(id="a" * 32, key="", name="x.jpg", upload_bytes=1)
    row = JobRow(id="0badc0de-b1-0", batch="0badc0de-b1", index=0, function="echo", background=False, priority="normal")
    revisions = [photo.view()["revision"] if n % 2 else row.view()["revision"] for n in range(1000)]
    assert revisions == sorted(set(revisions))
    assert revisions[-1] < 2**53  # exact as a JavaScript number


async def test_a_live_stream_wakes_up_for_each_new_event() -> None:
    from gearworker.web.events import Hub

    hub = Hub()
    stream = hub.stream(SESSION)
    assert isinstance(stream, AsyncGenerator)  # for aclose() below: stream() is typed as an AsyncIterator
    assert (await anext(stream)).startswith("retry:")
    assert (await anext(stream)).startswith("event: hello\n")
    nxt = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    assert not nxt.done()
    hub.publish(SESSION, "photo", {"state": "done"})
    assert '"state":"done"' in await asyncio.wait_for(nxt, 5)
    hub.close()
    assert [c async for c in stream] == []
    await stream.aclose()


def test_the_photo_store_keeps_photos_by_count_and_bytes_dropping_the_oldest_finished(tmp_path: Path) -> None:
    from gearworker.web.photos import CopyFile, Photo
    from gearworker.web.storage import PhotoStore

    store = PhotoStore(tmp_path, max_photos=3, max_bytes=2500)
    for i in range(3):
        p = Photo(id=f"{i:032x}", key="", name=f"{i}.jpg", upload_bytes=1, state="done", created=i)
        store.add(p, io.BytesIO(b"o"))
        store.write_copy(p, "copy-256.jpg", b"x" * 1000)
        p.copies = [CopyFile(256, 256, 171, "jpeg", 1000, "copy-256.jpg")]
        store.save(p)
    running = Photo(id="f" * 32, key="", name="r.jpg", upload_bytes=1, state="resizing", created=9)
    store.add(running, io.BytesIO(b"o"))
    assert store.trim() == [f"{0:032x}"]  # 4 photos and 3004 bytes: the oldest finished one goes
    assert not (tmp_path / f"{0:032x}").exists()
    assert store.copy_path(f"{1:032x}", 0) is not None and store.copy_path(f"{2:032x}", 0) is not None
    assert store.get("f" * 32) is running  # never drop a photo still being resized
    assert [p.name for p in store.page(0, 2)] == ["r.jpg", "2.jpg"]  # newest first, paged
    # A new process finds the same photos, and the one that was being resized comes back to be resized again.
    again = PhotoStore(tmp_path, max_photos=3, max_bytes=2500)
    assert [p.id for p in again.load()] == ["f" * 32]
    assert [p.name for p in again.page(0, 10)] == ["r.jpg", "2.jpg", "1.jpg"]
    kept = again.get(f"{2:032x}")
    assert kept is not None and kept.copies == [CopyFile(256, 256, 171, "jpeg", 1000, "copy-256.jpg")]


def test_download_names_survive_any_characters() -> None:
    from gearworker.web.routes import _attachment, _safe_name

    assert _safe_name('C:\\Users\\me\\..\\tårn".jpg') == "tårn.jpg"
    assert _safe_name("../../etc/passwd") == "passwd"
    header = _attachment("tårn-683x1024.jpg")
    header.encode("latin-1")  # what HTTP headers must be
    assert header == "attachment; filename=\"t_rn-683x1024.jpg\"; filename*=UTF-8''t%C3%A5rn-683x1024.jpg"


def test_gearworker_web_refuses_a_bad_server_address_in_plain_words(capsys: pytest.CaptureFixture[str]) -> None:
    from gearworker.app.cli import main

    assert main(["web", "--server", "127.0.0.1:99999"]) == 2
    assert "port out of range" in capsys.readouterr().err
