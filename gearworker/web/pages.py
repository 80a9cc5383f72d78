"""The pages and read-only endpoints: the single page, the login, the app's settings, the live streams."""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator

import structlog
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from . import login
from .events import SESSION_RE, format_event, merge, sse
from .photos import ACCEPTED, OUTPUT_FORMATS, human_size
from .security import client_host, login_cookie, refuse
from .state import LOGIN_ATTEMPTS, MAX_COPIES, PRIORITIES, SERVERS_INTERVAL, STATIC, WebApp

__all__ = ["Pages"]

log = structlog.get_logger("gearworker.web")


class Pages:
    """``/``, ``/login``, ``/api/config``, ``/api/login``, ``/api/logout``, ``/api/events``, ``/api/servers``."""

    def __init__(self, web: WebApp) -> None:
        self.web = web
        # The limits the Photos page states are in the page as sent, not filled in after it loads,
        # when the longer line would push everything below it down (a layout shift).
        self._index = (
            (STATIC / "index.html")
            .read_text()
            .replace("{{max_upload}}", html.escape(human_size(web.max_upload_bytes)))
            .replace("{{accepted}}", html.escape(ACCEPTED))
        )

    async def index(self, request: Request) -> Response:
        return HTMLResponse(self._index, headers={"cache-control": "no-cache"})

    async def login_page(self, request: Request) -> Response:
        return FileResponse(STATIC / "login.html", headers={"cache-control": "no-cache"})

    async def config(self, request: Request) -> Response:
        return JSONResponse(
            {
                "servers": self.web.gateway.servers,
                "max_upload_bytes": self.web.max_upload_bytes,
                "max_upload": human_size(self.web.max_upload_bytes),
                "accepted": ACCEPTED,
                "max_copies": MAX_COPIES,
                "priorities": list(PRIORITIES),
                "boot": self.web.hub.boot,
                "formats": list(OUTPUT_FORMATS),
                "login": bool(self.web.options.password_hash),
                "job_timeout": self.web.options.job_timeout,
            }
        )

    async def do_login(self, request: Request) -> Response:
        web = self.web
        stored = web.options.password_hash
        if not stored:
            return refuse(404, "This web app has no login.")
        # Every attempt takes a token before the password is checked, so attempts sent at once are
        # counted too; a right password gives its token back: only wrong ones use up the allowance.
        client = client_host(request)
        if (wait := web.login_rate.take(client)) > 0:
            log.warning("web.login.rate_limited", client=client, retry_after=wait)
            return refuse(
                429,
                f"Too many wrong passwords: try again in {int(wait)} s (at most {LOGIN_ATTEMPTS} a minute).",
                **{"retry-after": str(int(wait))},
            )
        try:
            password = str((await request.json()).get("password", ""))
        except (ValueError, AttributeError):
            return refuse(400, "Send the password as JSON.")
        if not await asyncio.to_thread(login.verify_password, password, stored):
            log.warning("web.login.failed", client=client)
            return refuse(401, "Wrong password.")
        web.login_rate.refund(client)
        cookie = web.logins.start(stored)
        await web.save_logins()
        log.info("web.login", client=client, logins=len(web.logins))
        response = JSONResponse({"ok": True})
        response.headers.append("set-cookie", login_cookie(cookie, secure=request.url.scheme == "https"))
        return response

    async def do_logout(self, request: Request) -> Response:
        if self.web.logins.end(request.cookies.get(login.COOKIE)):
            await self.web.save_logins()
            log.info("web.logout", client=client_host(request), logins=len(self.web.logins))
        response = JSONResponse({"ok": True})
        response.headers.append("set-cookie", f"{login.COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
        return response

    # -- live streams -------------------------------------------------------

    async def events(self, request: Request) -> Response:
        session = request.query_params.get("session", "")
        if not SESSION_RE.match(session):
            return refuse(400, "This page's session id is missing or malformed; reload the page.")
        # EventSource resends Last-Event-ID when it reconnects by itself; a page that closed its
        # stream while hidden opens a new one with ?last=.
        last = request.headers.get("last-event-id") or request.query_params.get("last") or ""
        # One stream per page for its jobs, the photos and the servers table: browsers allow only six
        # HTTP/1.1 connections per host, and each open EventSource holds one.
        return sse(merge(self.web.hub.stream(session, last[:64]), self._servers_stream()))

    async def servers(self, request: Request) -> Response:
        return JSONResponse(await self.web.gateway.cached_status())

    async def _servers_stream(self) -> AsyncIterator[str]:
        while not self.web.hub.closed:
            yield format_event("servers", await self.web.gateway.cached_status())
            if await self.web.hub.sleep(SERVERS_INTERVAL):
                return
