"""The Starlette app: pages, live streams and the server table; the wiring of every route.

Routes (everything the app serves comes from its own ``static/`` folder or
from its storage root by an id it made; no route takes a file path from the user):

- ``GET /`` the single page (Photos, Jobs and Servers tabs), ``/static/...``; ``GET /login``
- ``GET /api/config`` limits the page checks before uploading, and the boot id
- ``GET /api/events?session=S`` this page's job events, every photo's, and the servers table (SSE)
- ``GET /api/servers`` the admin ``status`` table (JSON)
- ``GET /api/photos?offset=&limit=`` stored photos, newest first; ``POST`` one photo (multipart ``photo``);
  ``DELETE /api/photos/{id}``; ``GET /photos/{id}/{n}`` a resized copy (ETag, Cache-Control)
- ``POST /api/jobs`` the Jobs form (JSON only); ``POST /api/jobs/{id}/cancel``; ``POST /api/jobs/resume``
- ``POST /api/login``, ``POST /api/logout`` when a password is set

:mod:`gearworker.web.security` checks every request first (Host, Origin,
CSRF token, login, body caps).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import login
from .events import SESSION_RE, Hub, format_event
from .jobs import JobBook, JobContext
from .photos import ACCEPTED, OUTPUT_FORMATS, human_size
from .security import BodyLimit, Guard, GuardConfig, RateLimit, allowed_hosts, login_cookie, refuse
from .service import Gateway, PhotoContext, run_photo
from .storage import PhotoStore

log = structlog.get_logger("gearworker.web")

STATIC = Path(__file__).resolve().parent / "static"
#: Room for the multipart boundaries and headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
#: Most parallel copies one form submission may ask for.
MAX_COPIES = 100
MAX_PAYLOAD = 1024 * 1024
PRIORITIES = ("normal", "high", "low")
#: How often the servers table refreshes, seconds.
SERVERS_INTERVAL = 1.0

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


def error(status: int, message: str, **headers: str) -> Response:
    """An error the page shows as is: ``{"error": "<plain words>"}``."""
    return refuse(status, message, **headers)


@dataclass(frozen=True)
class WebOptions:
    """Everything the app is configured with besides the servers (see ``docs/settings.md``)."""

    max_upload_bytes: int = 50 * 1024 * 1024
    storage_root: str = "var/photos"
    max_photos: int = 500
    max_stored_bytes: int = 2 * 1024**3
    photo_mode: str = "bytes"
    password_hash: str | None = None
    listen_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    rate_limit: int = 600
    job_timeout: float = 300.0
    connect_timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Any, *, listen_host: str) -> WebOptions:
        return cls(
            max_upload_bytes=settings.max_upload_bytes,
            storage_root=settings.web_storage_root,
            max_photos=settings.web_max_photos,
            max_stored_bytes=settings.web_max_stored_bytes,
            photo_mode=settings.web_photo_mode,
            password_hash=settings.web_password_hash,
            listen_host=listen_host,
            allowed_hosts=tuple(settings.web_allowed_hosts),
            rate_limit=settings.web_rate_limit,
            job_timeout=settings.web_job_timeout,
            connect_timeout=settings.connect_timeout,
        )


class WebApp:
    """The app's state (client, events, photos, jobs) and the handlers of its pages and streams."""

    def __init__(self, servers: Sequence[str], options: WebOptions) -> None:
        self.options = options
        self.max_upload_bytes = options.max_upload_bytes
        self.gateway = Gateway(servers, connect_timeout=options.connect_timeout)
        self.hub = Hub()
        self.photos = PhotoStore(
            options.storage_root, max_photos=options.max_photos, max_bytes=options.max_stored_bytes
        )
        self.photo_ctx = PhotoContext(self.gateway, self.hub, self.photos, options.photo_mode, options.job_timeout)
        self.job_ctx = JobContext(self.gateway, self.hub, options.job_timeout)
        self.jobs = JobBook()
        self.rate = RateLimit(options.rate_limit)
        self.tasks: set[asyncio.Task[None]] = set()
        self._batches = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        # Keep a reference: the loop holds tasks weakly, and shutdown cancels what is left.
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def next_batch(self) -> str:
        """A batch id unique across restarts: the boot id, then a counter."""
        self._batches += 1
        return f"{self.hub.boot}-b{self._batches}"

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        interrupted = await asyncio.to_thread(self.photos.load)
        for photo in interrupted:  # the original is on disk: resize it again rather than leave it stuck
            photo.state, photo.numerator, photo.denominator = "queued", 0, 0
            self.spawn(run_photo(self.photo_ctx, photo, None))
        log.info(
            "web.started",
            servers=self.gateway.servers,
            boot=self.hub.boot,
            photos=len(self.photos),
            resumed=len(interrupted),
            storage_root=str(self.photos.root),
            photo_mode=self.options.photo_mode,
            login=bool(self.options.password_hash),
        )
        try:
            yield
        finally:
            await self.close()
            log.info("web.stopped", photos_kept=len(self.photos))

    async def close(self) -> None:
        """End the streams, cancel the background tasks (photos resume at the next start), drop the client."""
        self.hub.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.gateway.close()

    def end_streams(self) -> None:
        """End the live streams (from a signal handler): uvicorn waits for open responses before it stops."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.hub.close)

    # -- pages and settings -------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def login_page(self, request: Request) -> Response:
        return FileResponse(STATIC / "login.html", headers={"cache-control": "no-cache"})

    async def config(self, request: Request) -> Response:
        return JSONResponse(
            {
                "servers": self.gateway.servers,
                "max_upload_bytes": self.max_upload_bytes,
                "max_upload": human_size(self.max_upload_bytes),
                "accepted": ACCEPTED,
                "max_copies": MAX_COPIES,
                "priorities": list(PRIORITIES),
                "boot": self.hub.boot,
                "formats": list(OUTPUT_FORMATS),
                "login": bool(self.options.password_hash),
                "job_timeout": self.options.job_timeout,
            }
        )

    async def do_login(self, request: Request) -> Response:
        stored = self.options.password_hash
        if not stored:
            return error(404, "This web app has no login.")
        if (wait := self.rate.take(f"login:{_client(request)}", 10)) > 0:
            return error(429, "Too many login attempts; wait a minute.", **{"retry-after": str(int(wait))})
        try:
            password = str((await request.json()).get("password", ""))
        except (ValueError, AttributeError):
            return error(400, "Send the password as JSON.")
        if not await asyncio.to_thread(login.verify_password, password, stored):
            log.warning("web.login.failed", client=_client(request))
            return error(401, "Wrong password.")
        log.info("web.login", client=_client(request))
        response = JSONResponse({"ok": True})
        response.headers.append(
            "set-cookie", login_cookie(login.session_cookie(stored), secure=request.url.scheme == "https")
        )
        return response

    async def do_logout(self, request: Request) -> Response:
        response = JSONResponse({"ok": True})
        response.headers.append("set-cookie", f"{login.COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
        return response

    # -- live streams -------------------------------------------------------

    async def events(self, request: Request) -> Response:
        session = request.query_params.get("session", "")
        if not SESSION_RE.match(session):
            return error(400, "This page's session id is missing or malformed; reload the page.")
        # EventSource resends Last-Event-ID when it reconnects by itself; a page that closed its
        # stream while hidden opens a new one with ?last=.
        last = request.headers.get("last-event-id") or request.query_params.get("last") or ""
        # One stream per page for its jobs, the photos and the servers table: browsers allow only six
        # HTTP/1.1 connections per host, and each open EventSource holds one.
        return _sse(_merge(self.hub.stream(session, last[:64]), self._servers_stream()))

    async def servers(self, request: Request) -> Response:
        return JSONResponse(await self.gateway.cached_status())

    async def _servers_stream(self) -> AsyncIterator[str]:
        while not self.hub.closed:
            yield format_event("servers", await self.gateway.cached_status())
            if await self.hub.sleep(SERVERS_INTERVAL):
                return


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(404, "There is nothing at this address.")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error(405, "This address does not take that kind of request.")


async def _merge(*streams: AsyncIterator[str]) -> AsyncIterator[str]:
    """Chunks from several streams as they come; ends when all have ended."""
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=64)

    async def pump(stream: AsyncIterator[str]) -> None:
        try:
            async for chunk in stream:
                await queue.put(chunk)
        finally:
            await queue.put(None)

    tasks = [asyncio.ensure_future(pump(s)) for s in streams]
    try:
        running = len(tasks)
        while running:
            chunk = await queue.get()
            if chunk is None:
                running -= 1
            else:
                yield chunk
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _sse(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )


class _SecurityHeaders:
    """Add the same protective headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(servers: Sequence[str], options: WebOptions | None = None, **kwargs: Any) -> Starlette:
    """Build the web app for ``servers`` ("host:port" each); ``kwargs`` are :class:`WebOptions` fields."""
    from .routes import JobRoutes, PhotoRoutes

    options = dataclasses.replace(options or WebOptions(), **kwargs)
    web = WebApp(servers, options)
    photos, jobs = PhotoRoutes(web), JobRoutes(web)
    routes = [
        Route("/", web.index),
        Route("/login", web.login_page),
        Route("/api/config", web.config),
        Route("/api/login", web.do_login, methods=["POST"]),
        Route("/api/logout", web.do_logout, methods=["POST"]),
        Route("/api/events", web.events),
        Route("/api/servers", web.servers),
        Route("/api/photos", photos.list, methods=["GET"]),
        Route("/api/photos", photos.upload, methods=["POST"]),
        Route("/api/photos/{photo_id}", photos.delete, methods=["DELETE"]),
        Route("/photos/{photo_id}/{index}", photos.copy),
        Route("/api/jobs", jobs.submit, methods=["POST"]),
        Route("/api/jobs/resume", jobs.resume, methods=["POST"]),
        Route("/api/jobs/{row_id}/cancel", jobs.cancel, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    upload_limit = options.max_upload_bytes + MULTIPART_OVERHEAD
    guard = GuardConfig(
        hosts=allowed_hosts(options.listen_host, options.allowed_hosts),
        body_limits={
            "/api/photos": BodyLimit(
                upload_limit,
                f"That file is too big: photos may be up to {human_size(options.max_upload_bytes)}.",
                "web.photo.rejected",
            ),
            "/api/jobs": BodyLimit(
                MAX_PAYLOAD + 4096, f"The payload is too big: at most {human_size(MAX_PAYLOAD)} from this form."
            ),
            "/api/jobs/resume": BodyLimit(1024 * 1024, "Too many jobs to pick up again."),
        },
        password_hash=options.password_hash,
    )
    app = Starlette(routes=routes, lifespan=web.lifespan, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.web = web
    app.add_middleware(Guard, config=guard)
    app.add_middleware(_SecurityHeaders)
    return app
