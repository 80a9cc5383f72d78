"""The web app's defences and its photo routes, in-process (httpx against the ASGI app; no server needed).

What another web site may not do (Host, Origin, CSRF token, content type),
body caps enforced before reading, the optional login, the per-client rate
limit, and the photo list, delete and cached downloads from disk.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gearworker.web.app import create_app
from gearworker.web.login import check_hash_format, hash_password, session_cookie, valid_session, verify_password
from gearworker.web.photos import CopyFile, Photo, has_alpha, output_format
from gearworker.web.security import RateLimit, is_loopback

SESSION = "testsession01"
TOKEN = "page-token-123"
PAGE = {"cookies": {"gw_csrf": TOKEN}, "headers": {"x-csrf-token": TOKEN}}
DEAD = "127.0.0.1:1"  # nothing listens there: these tests need no job server


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[tuple[Starlette, httpx.AsyncClient]] = []

    async def build(
        *, page: bool = True, base: str = "http://localhost", **options: Any
    ) -> tuple[Starlette, httpx.AsyncClient]:
        options.setdefault("storage_root", str(tmp_path / "photos"))
        app = create_app([DEAD], connect_timeout=0.5, **options)
        await asyncio.to_thread(app.state.web.photos.load)
        extra: dict[str, Any] = PAGE if page else {}
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base, **extra)
        made.append((app, client))
        return app, client

    yield build
    for app, client in made:
        await client.aclose()
        await app.state.web.close()  # what the app's lifespan does at shutdown


def jobs_submitted(app: Starlette) -> int:
    return app.state.web._batches


# -- other sites ---------------------------------------------------------------------------------


async def test_a_post_from_another_origin_is_refused_even_with_the_token(make: Any) -> None:
    app, client = await make()
    r = await client.post(
        f"/api/jobs?session={SESSION}", json={"function": "echo"}, headers={"origin": "http://evil.example"}
    )
    assert (r.status_code, r.json()["error"]) == (403, "Refused: this request came from another web site.")
    r = await client.post(
        f"/api/jobs?session={SESSION}", json={"function": "echo"}, headers={"sec-fetch-site": "cross-site"}
    )
    assert r.status_code == 403
    assert jobs_submitted(app) == 0


async def test_a_plain_html_form_cannot_submit_jobs(make: Any) -> None:
    """What a form on another site sends: text/plain, no token header (its cookie is SameSite=Strict)."""
    app, client = await make(page=False)
    r = await client.post(
        f"/api/jobs?session={SESSION}",
        content=b'{"function": "slow", "payload": "30"}',
        headers={"content-type": "text/plain"},
    )
    assert (r.status_code, r.json()["error"]) == (
        403,
        "Refused: the page's security token is missing or old; reload the page.",
    )
    assert jobs_submitted(app) == 0


async def test_jobs_take_only_application_json(make: Any) -> None:
    app, client = await make()
    r = await client.post(
        f"/api/jobs?session={SESSION}", content=b'{"function": "echo"}', headers={"content-type": "text/plain"}
    )
    assert (r.status_code, r.json()["error"]) == (415, "Send the form as application/json.")
    assert jobs_submitted(app) == 0


async def test_an_unknown_host_name_is_refused_against_dns_rebinding(make: Any) -> None:
    _, client = await make(base="http://rebind.evil.example:8000")
    r = await client.get("/api/photos")
    assert r.status_code == 421
    _, named = await make(base="http://photos.example.org", allowed_hosts=("photos.example.org",))
    assert (await named.get("/api/photos")).status_code == 200


async def test_the_page_sets_a_samesite_strict_token_cookie(make: Any) -> None:
    _, client = await make(page=False)
    r = await client.get("/")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("gw_csrf=") and "SameSite=Strict" in cookie and "Path=/" in cookie


# -- bodies are capped while read --------------------------------------------------------------


async def test_a_declared_body_over_the_cap_is_refused_before_one_byte_is_read(make: Any) -> None:
    app, _ = await make()
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/jobs",
        "raw_path": b"/api/jobs",
        "root_path": "",
        "query_string": b"session=" + SESSION.encode(),
        "headers": [
            (b"host", b"localhost"),
            (b"content-type", b"application/json"),
            (b"content-length", str(300 * 1024 * 1024).encode()),
            (b"cookie", f"gw_csrf={TOKEN}".encode()),
            (b"x-csrf-token", TOKEN.encode()),
        ],
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413 and reads == 0


async def test_a_chunked_body_is_cut_off_at_the_cap(make: Any) -> None:
    _, client = await make()
    chunks = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks
        for _ in range(10_000):  # 640 MB if it were all read
            chunks += 1
            yield b"x" * 65536

    r = await client.post(f"/api/jobs?session={SESSION}", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == "The payload is too big: at most 1.0 MB from this form."
    assert chunks < 30  # stopped just past the 1 MB cap


# -- login -----------------------------------------------------------------------------------


def test_password_hashes_verify_and_sessions_are_signed() -> None:
    stored = hash_password("correct horse", n=2**10)
    assert check_hash_format(stored) is None and stored.startswith("scrypt$1024$8$1$")
    assert verify_password("correct horse", stored) and not verify_password("wrong", stored)
    cookie = session_cookie(stored, now=1000.0)
    assert valid_session(cookie, stored, now=1001.0)
    assert not valid_session(cookie, stored, now=10**9)  # expired
    assert not valid_session(cookie.replace(".", ".0", 1)[: len(cookie)], stored, now=1001.0)
    assert not valid_session(cookie, hash_password("another", n=2**10), now=1001.0)  # new password: logged out
    assert check_hash_format("md5$abc") is not None


async def test_with_a_password_everything_needs_a_login(make: Any) -> None:
    stored = hash_password("correct horse", n=2**10)
    _, client = await make(password_hash=stored)
    assert (await client.get("/api/photos")).status_code == 401
    page = await client.get("/")
    assert (page.status_code, page.headers["location"]) == (303, "/login")
    assert (await client.get("/login")).status_code == 200
    assert (await client.post("/api/login", json={"password": "nope"})).status_code == 401
    r = await client.post("/api/login", json={"password": "correct horse"})
    cookie = r.headers["set-cookie"]
    assert r.status_code == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert (await client.get("/api/photos")).status_code == 200  # the cookie jar now holds the login


def test_loopback_addresses_are_told_apart_from_remote_ones() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))


# -- rate limit ------------------------------------------------------------------------------


def test_the_rate_limit_refills_over_time() -> None:
    limit = RateLimit(60)  # one a second
    assert limit.take("a", 60, now=0.0) == 0.0
    assert limit.take("a", 1, now=0.0) == 1.0  # empty: wait a second
    assert limit.take("b", 1, now=0.0) == 0.0  # another client has its own bucket
    assert limit.take("a", 1, now=1.0) == 0.0


async def test_too_many_jobs_from_one_client_get_429(make: Any) -> None:
    _, client = await make(rate_limit=5)
    ok = await client.post(f"/api/jobs?session={SESSION}", json={"function": "echo", "copies": 5})
    assert ok.status_code == 202
    r = await client.post(f"/api/jobs?session={SESSION}", json={"function": "echo"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"].startswith("Too many jobs from here: try again in ")


# -- photos on disk: list, delete, cached downloads ----------------------------------------------


def store_photo(app: Starlette, name: str, created: float) -> Photo:
    """A finished photo put straight into the app's store (no worker needed)."""
    from gearworker.web.photos import new_id

    store = app.state.web.photos
    photo = Photo(id=new_id(), key="", name=name, upload_bytes=3, created=created, state="done")
    store.add(photo, io.BytesIO(b"abc"))
    store.write_copy(photo, "copy-256.jpg", b"\xff\xd8\xff" + name.encode())
    photo.copies = [CopyFile(256, 256, 171, "jpeg", 3 + len(name), "copy-256.jpg")]
    store.save(photo)
    return photo


async def test_photos_are_listed_newest_first_in_pages(make: Any) -> None:
    app, client = await make()
    for i in range(5):
        store_photo(app, f"{i}.jpg", created=1000.0 + i)
    first = (await client.get("/api/photos?limit=2")).json()
    assert [p["name"] for p in first["photos"]] == ["4.jpg", "3.jpg"] and first["total"] == 5
    rest = (await client.get("/api/photos?offset=2&limit=10")).json()
    assert [p["name"] for p in rest["photos"]] == ["2.jpg", "1.jpg", "0.jpg"]


async def test_a_copy_is_served_from_disk_with_an_etag_and_304_when_unchanged(make: Any) -> None:
    app, client = await make()
    photo = store_photo(app, "a.jpg", 1.0)
    r = await client.get(f"/photos/{photo.id}/0")
    assert r.status_code == 200 and r.content == b"\xff\xd8\xffa.jpg"
    assert r.headers["cache-control"] == "private, max-age=86400" and r.headers["content-type"] == "image/jpeg"
    again = await client.get(f"/photos/{photo.id}/0", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


async def test_a_deleted_photo_is_gone_from_disk_and_list(make: Any, tmp_path: Path) -> None:
    app, client = await make()
    photo = store_photo(app, "a.jpg", 1.0)
    assert (await client.delete(f"/api/photos/{photo.id}")).status_code == 200
    assert not (tmp_path / "photos" / photo.id).exists()
    assert (await client.get(f"/photos/{photo.id}/0")).status_code == 404
    assert (await client.get("/api/photos")).json()["total"] == 0
    assert (await client.delete(f"/api/photos/{photo.id}")).status_code == 404


async def test_a_restarted_app_lists_and_serves_the_same_photos(make: Any) -> None:
    app, _ = await make()
    photo = store_photo(app, "kept.jpg", 1.0)
    _, client = await make()  # a new app on the same storage root: what a restart sees
    assert [p["id"] for p in (await client.get("/api/photos")).json()["photos"]] == [photo.id]
    assert (await client.get(f"/photos/{photo.id}/0")).content == b"\xff\xd8\xffkept.jpg"


# -- transparency --------------------------------------------------------------------------


def test_transparent_sources_get_a_format_with_alpha() -> None:
    from PIL import Image

    def encoded(mode: str, fmt: str, **kw: Any) -> bytes:
        out = io.BytesIO()
        Image.new(mode, (8, 8), (10, 20, 30, 0) if mode == "RGBA" else (10, 20, 30)).save(out, fmt, **kw)
        return out.getvalue()

    assert has_alpha(encoded("RGBA", "PNG")) and output_format("auto", encoded("RGBA", "PNG")) == "png"
    assert output_format("auto", encoded("RGBA", "WEBP", lossless=True)) == "webp"
    assert output_format("auto", encoded("RGBA", "WEBP")) == "webp"
    assert output_format("auto", encoded("RGB", "PNG")) == "jpeg"
    assert output_format("auto", encoded("RGB", "JPEG")) == "jpeg"
    assert output_format("jpeg", encoded("RGBA", "PNG")) == "jpeg"  # asked for: flattened on white
    assert output_format("avif", encoded("RGB", "JPEG")) == "avif"


async def test_a_rejected_upload_is_logged(make: Any) -> None:
    from structlog.testing import capture_logs

    _, client = await make(max_upload_bytes=1000)
    with capture_logs() as logs:
        r1 = await client.post(f"/api/photos?session={SESSION}", files={"photo": ("notes.txt", b"hello", "text/plain")})
        r2 = await client.post(f"/api/photos?session={SESSION}", files={"photo": ("big.jpg", b"\xff" * 5000)})
    assert (r1.status_code, r2.status_code) == (415, 413)
    rejected = [e for e in logs if e["event"] == "web.photo.rejected"]
    assert [(e["reason"], e["log_level"]) for e in rejected] == [("not_an_image", "warning"), ("too_large", "warning")]
