"""The web app's optional login, in-process: wrong passwords are rate-limited, logout revokes the cookie."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gearworker.web.app import create_app
from gearworker.web.login import hash_password

SESSION = "testsession01"
TOKEN = "page-token-123"
PAGE: dict[str, Any] = {"cookies": {"gw_csrf": TOKEN}, "headers": {"x-csrf-token": TOKEN}}
DEAD = "127.0.0.1:1"  # nothing listens there: these tests need no job server
PASSWORD = "correct horse"
STORED = hash_password(PASSWORD, n=2**10)


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    """Build apps on one storage root (a second one is what a restart of the first sees)."""
    made: list[tuple[Starlette, httpx.AsyncClient]] = []

    async def build(**options: Any) -> tuple[Starlette, httpx.AsyncClient]:
        options.setdefault("storage_root", str(tmp_path / "photos"))
        options.setdefault("password_hash", STORED)
        app = create_app([DEAD], connect_timeout=0.5, **options)
        await asyncio.to_thread(app.state.web.photos.load)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", **PAGE)
        made.append((app, client))
        return app, client

    yield build
    for app, client in made:
        await client.aclose()
        await app.state.web.close()


async def log_in(client: httpx.AsyncClient) -> str:
    r = await client.post("/api/login", json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    return client.cookies["gw_login"]


def with_login(cookie: str) -> dict[str, str]:
    return {"cookie": f"gw_csrf={TOKEN}; gw_login={cookie}"}


async def test_the_eleventh_wrong_password_in_a_row_gets_429_with_retry_after(make: Any) -> None:
    """Ten wrong passwords a minute per client (docs/web.md); the 11th in a row is refused unread."""
    _, client = await make()
    answers = [(await client.post("/api/login", json={"password": f"guess {i}"})).status_code for i in range(10)]
    assert answers == [401] * 10
    r = await client.post("/api/login", json={"password": "guess 10"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"].startswith("Too many wrong passwords")
    r = await client.post("/api/login", json={"password": PASSWORD})  # the right one waits too
    assert r.status_code == 429


async def test_wrong_passwords_from_one_client_leave_other_clients_and_the_job_allowance_alone(make: Any) -> None:
    app, client = await make(rate_limit=5)
    cookie = await log_in(client)
    for i in range(11):
        await client.post("/api/login", json={"password": f"guess {i}"})
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.9", 1)), base_url="http://localhost", **PAGE
    )
    async with other:
        assert (await other.post("/api/login", json={"password": PASSWORD})).status_code == 200
    jobs = await client.post(
        f"/api/jobs?session={SESSION}", json={"function": "echo", "copies": 5}, headers=with_login(cookie)
    )
    assert jobs.status_code == 202  # the job allowance (5 a minute) is untouched by the logins


async def test_a_right_password_does_not_count_against_the_allowance(make: Any) -> None:
    _, client = await make()
    for _ in range(12):
        await log_in(client)
    assert (await client.post("/api/login", json={"password": "nope"})).status_code == 401


async def test_a_login_cookie_is_refused_after_logout(make: Any) -> None:
    _, client = await make()
    cookie = await log_in(client)
    assert (await client.get("/api/photos", headers=with_login(cookie))).status_code == 200
    r = await client.post("/api/logout", headers=with_login(cookie))
    assert r.status_code == 200 and "gw_login=;" in r.headers["set-cookie"]
    # A copy of the cookie kept from before (another tab, a stolen cookie) opens nothing any more.
    assert (await client.get("/api/photos", headers=with_login(cookie))).status_code == 401
    page = await client.get("/", headers=with_login(cookie))
    assert (page.status_code, page.headers["location"]) == (303, "/login")


async def test_a_login_cookie_is_refused_after_logout_also_after_a_restart(make: Any) -> None:
    _, client = await make()
    kept, revoked = await log_in(client), await log_in(client)
    await client.post("/api/logout", headers=with_login(revoked))
    _, restarted = await make()  # a new app on the same storage root
    assert (await restarted.get("/api/photos", headers=with_login(revoked))).status_code == 401
    assert (await restarted.get("/api/photos", headers=with_login(kept))).status_code == 200  # others stay in


async def test_logins_are_kept_small_in_the_storage_root(make: Any, tmp_path: Path) -> None:
    """The record of logins holds hashes of their ids, never the cookie, and is readable by its owner only."""
    _, client = await make()
    cookie = await log_in(client)
    record = tmp_path / "photos" / "logins.json"
    assert record.stat().st_mode & 0o077 == 0
    text = record.read_text()
    assert cookie not in text and cookie.split(".")[1] not in text
    assert len(json.loads(text)["logins"]) == 1
