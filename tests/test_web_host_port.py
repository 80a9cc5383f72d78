"""The Host check names a port too, and photo copies stay on this origin (in-process, httpx against the app)."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gearmand import free_port, wait_for_port
from starlette.applications import Starlette

from gearworker.web.app import create_app
from gearworker.web.photos import CopyFile, Photo, new_id

DEAD = "127.0.0.1:1"  # nothing listens there: these tests need no job server


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Starlette] = []

    def build(**options: Any) -> Starlette:
        made.append(create_app([DEAD], storage_root=str(tmp_path / "photos"), connect_timeout=0.5, **options))
        return made[-1]

    yield build
    for a in made:
        await a.state.web.close()


async def status(app: Starlette, host: str, scheme: str = "http") -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://{host}") as client:
        return (await client.get("/api/config")).status_code


def test_gearworker_web_refuses_its_own_host_name_with_another_port(tmp_path: Path) -> None:
    """The real server on port P: ``Host: 127.0.0.1:P`` is served, ``127.0.0.1:<another port>`` gets 421."""
    port = free_port()
    cmd = [sys.executable, "-m", "gearworker", "web", "--port", str(port), "--server", DEAD]
    proc = subprocess.Popen(
        [*cmd, "--storage-root", str(tmp_path / "photos")],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        url = f"http://127.0.0.1:{port}/api/config"
        assert httpx.get(url).status_code == 200
        assert httpx.get(url, headers={"host": f"127.0.0.1:{port + 1}"}).status_code == 421
        assert httpx.get(url, headers={"host": "localhost"}).status_code == 421  # port 80
    finally:
        proc.terminate()
        proc.wait(20)


async def test_the_listen_port_is_the_only_port_loopback_names_answer_on(app: Any) -> None:
    web = app(listen_port=8000)
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
        assert await status(web, host) == 200, host
    for host in ("localhost:9000", "127.0.0.1:8001", "[::1]:80", "localhost"):  # no port: 80
        assert await status(web, host) == 421, host


async def test_without_a_port_the_host_means_the_default_port_of_its_scheme(app: Any) -> None:
    assert await status(app(listen_port=80), "localhost") == 200
    assert await status(app(listen_port=80), "localhost:80") == 200
    assert await status(app(listen_port=443), "localhost", scheme="https") == 200
    assert await status(app(listen_port=443), "localhost", scheme="http") == 421


async def test_the_listen_address_answers_on_the_listen_port_only(app: Any) -> None:
    web = app(listen_host="10.1.2.3", listen_port=8000)
    assert await status(web, "10.1.2.3:8000") == 200
    assert await status(web, "10.1.2.3:8080") == 421


async def test_an_allowed_name_without_a_port_answers_behind_a_proxy_or_on_the_listen_port(app: Any) -> None:
    web = app(listen_port=8000, allowed_hosts=("photos.example.org",))
    assert await status(web, "photos.example.org", scheme="https") == 200  # a TLS proxy on 443
    assert await status(web, "photos.example.org") == 200  # a proxy on 80
    assert await status(web, "photos.example.org:8000") == 200  # straight to the app
    assert await status(web, "photos.example.org:9999") == 421


async def test_an_allowed_name_with_a_port_answers_on_that_port_only(app: Any) -> None:
    """A published port other than the one listened on (a container's -p 8080:8000) is named with it."""
    web = app(listen_port=8000, allowed_hosts=("photos.example.org:8443", "localhost:8080"))
    assert await status(web, "photos.example.org:8443", scheme="https") == 200
    assert await status(web, "photos.example.org", scheme="https") == 421
    assert await status(web, "localhost:8080") == 200
    assert await status(web, "localhost:8000") == 200  # loopback on the listen port, as always
    assert await status(web, "localhost:8081") == 421


async def test_a_star_answers_any_host_and_port(app: Any) -> None:
    assert await status(app(listen_port=8000, allowed_hosts=("*",)), "anything.example:1234") == 200


async def test_a_photo_copy_may_not_be_embedded_by_another_origin(app: Any) -> None:
    web = app()
    await asyncio.to_thread(web.state.web.photos.load)
    store = web.state.web.photos
    photo = Photo(id=new_id(), key="", name="a.jpg", upload_bytes=3, state="done")
    store.add(photo, io.BytesIO(b"abc"))
    store.write_copy(photo, "copy-256.jpg", b"\xff\xd8\xff")
    photo.copies = [CopyFile(256, 256, 171, "jpeg", 3, "copy-256.jpg")]
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        r = await client.get(f"/photos/{photo.id}/0")
        assert r.status_code == 200 and r.headers["cross-origin-resource-policy"] == "same-origin"
        again = await client.get(f"/photos/{photo.id}/0", headers={"if-none-match": r.headers["etag"]})
        assert again.status_code == 304 and again.headers["cross-origin-resource-policy"] == "same-origin"
