"""The Starlette app: pages, uploads, the Jobs form and live streams.

Routes (everything the app serves comes from its own ``static/`` folder or
from memory by an id it made; no route takes a file path from the user):

- ``GET /`` the single page (Photos, Jobs and Servers tabs), ``/static/...``
- ``GET /api/config`` limits the page checks before uploading
- ``GET /api/events?session=S`` this page's job and photo events and the servers table (SSE)
- ``GET /api/servers`` the admin ``status`` table (JSON)
- ``POST /api/photos`` one photo (multipart ``photo``); ``GET /photos/{id}/{n}`` a resized copy
- ``POST /api/jobs`` the Jobs form (JSON)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import structlog
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .events import SESSION_RE, Hub, format_event
from .photos import ACCEPTED, Photo, PhotoStore, human_size, new_id, sniff
from .service import Gateway, JobRow, run_job, run_photo

if TYPE_CHECKING:
    from ..client import Priority

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
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_PHOTO_ID_RE = re.compile(r"^[0-9a-f]{32}$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'"),
]


class UploadTooLarge(Exception):
    """The request body went past the upload limit."""


def error(status: int, message: str) -> JSONResponse:
    """An error the page shows as is: ``{"error": "<plain words>"}``."""
    return JSONResponse({"error": message}, status_code=status)


class WebApp:
    """The app's state (client, events, photos) and its request handlers."""

    def __init__(self, servers: Sequence[str], *, max_upload_bytes: int, store_budget: int,
                 connect_timeout: float) -> None:
        self.gateway = Gateway(servers, connect_timeout=connect_timeout)
        self.hub = Hub()
        self.photos = PhotoStore(store_budget)
        self.max_upload_bytes = max_upload_bytes
        self.tasks: set[asyncio.Task[None]] = set()
        self._batches = 0
        self._status_cache: tuple[float, dict[str, Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def spawn(self, coro: Any) -> None:
        # Keep a reference: the loop holds tasks weakly, and shutdown cancels what is left.
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        log.info("web.started", servers=self.gateway.servers, max_upload_bytes=self.max_upload_bytes)
        try:
            yield
        finally:
            self.hub.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.gateway.close()
            log.info("web.stopped", photos_kept=len(self.photos))

    def end_streams(self) -> None:
        """End the live streams (from a signal handler): uvicorn waits for open responses before it stops."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.hub.close)

    # -- pages and settings -------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def config(self, request: Request) -> Response:
        return JSONResponse({"servers": self.gateway.servers, "max_upload_bytes": self.max_upload_bytes,
                             "max_upload": human_size(self.max_upload_bytes), "accepted": ACCEPTED,
                             "max_copies": MAX_COPIES, "priorities": list(PRIORITIES)})

    # -- live streams -------------------------------------------------------

    async def events(self, request: Request) -> Response:
        session = request.query_params.get("session", "")
        if not SESSION_RE.match(session):
            return error(400, "This page's session id is missing or malformed; reload the page.")
        # EventSource resends Last-Event-ID when it reconnects by itself; a page that closed its
        # stream while hidden opens a new one with ?last=.
        last = request.headers.get("last-event-id") or request.query_params.get("last") or "0"
        last_id = int(last) if last.isdigit() else 0
        # One stream per page for its jobs and the servers table: browsers allow only six
        # HTTP/1.1 connections per host, and each open EventSource holds one.
        return _sse(_merge(self.hub.stream(session, last_id), self._servers_stream()))

    async def servers(self, request: Request) -> Response:
        return JSONResponse(await self._server_status())

    async def _servers_stream(self) -> AsyncIterator[str]:
        while not self.hub.closed:
            yield format_event("servers", await self._server_status())
            if await self.hub.sleep(SERVERS_INTERVAL):
                return

    async def _server_status(self) -> dict[str, Any]:
        # Several open pages share one admin query per interval.
        now = time.monotonic()
        if self._status_cache is None or now - self._status_cache[0] > SERVERS_INTERVAL / 2:
            self._status_cache = (now, await self.gateway.server_status())
        return self._status_cache[1]

    # -- photos -------------------------------------------------------------

    async def upload_photo(self, request: Request) -> Response:
        session = request.query_params.get("session", "")
        if not SESSION_RE.match(session):
            return error(400, "This page's session id is missing or malformed; reload the page.")
        too_big = f"That file is too big: photos may be up to {human_size(self.max_upload_bytes)}."
        limit = self.max_upload_bytes + MULTIPART_OVERHEAD
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return error(413, too_big)
        try:
            form = await Request(request.scope, _limited(request.receive, limit)).form(max_files=1, max_fields=4)
        except UploadTooLarge:
            return error(413, too_big)
        except ClientDisconnect:
            return error(400, "The upload was interrupted.")
        except HTTPException as e:
            return error(400, f"That upload could not be read: {e.detail}")
        try:
            upload = form.get("photo")
            if not isinstance(upload, UploadFile):
                return error(400, "No file was sent: choose a photo to upload.")
            data = await upload.read()
            name = _safe_name(upload.filename or "photo")
            key = str(form.get("key") or "")
        finally:
            await form.close()
        if len(data) > self.max_upload_bytes:
            return error(413, too_big)
        if not data:
            return error(400, f"“{name}” is empty: choose a photo to upload.")
        if sniff(data[:16]) is None:
            return error(415, f"“{name}” is not an image we can read (we take {ACCEPTED}).")
        photo = Photo(id=new_id(), key=key if _KEY_RE.match(key) else "", name=name, upload_bytes=len(data))
        self.photos.add(photo)
        self.hub.publish(session, "photo", photo.view())
        self.spawn(run_photo(self.gateway, self.hub, self.photos, session, photo, data))
        log.info("web.photo.accepted", photo=photo.id, bytes=len(data))
        return JSONResponse(photo.view(), status_code=202)

    async def photo_copy(self, request: Request) -> Response:
        photo_id, index = request.path_params["photo_id"], request.path_params["index"]
        copy = self.photos.copy(photo_id, int(index)) if _PHOTO_ID_RE.match(photo_id) and index.isdigit() else None
        if copy is None:
            return error(404, "That photo is not here (any more): resized copies are kept for a while only.")
        headers = {"cache-control": "private, max-age=3600"}
        if request.query_params.get("download"):
            photo = self.photos.get(photo_id)
            filename = photo.view()["copies"][int(index)]["filename"] if photo else f"photo.{copy.extension}"
            headers["content-disposition"] = _attachment(filename)
        return Response(copy.data, media_type=copy.media_type, headers=headers)

    # -- jobs form ----------------------------------------------------------

    async def submit_jobs(self, request: Request) -> Response:
        session = request.query_params.get("session", "")
        if not SESSION_RE.match(session):
            return error(400, "This page's session id is missing or malformed; reload the page.")
        body = await request.body()
        if len(body) > MAX_PAYLOAD + 4096:
            return error(413, f"The payload is too big: at most {human_size(MAX_PAYLOAD)} from this form.")
        try:
            form = json.loads(body)
            function = str(form.get("function", "")).strip()
            payload = str(form.get("payload", "")).encode()
            priority = str(form.get("priority", "normal"))
            background = bool(form.get("background", False))
            copies = int(form.get("copies", 1))
        except (ValueError, TypeError, AttributeError):
            return error(400, "The form could not be read; reload the page and try again.")
        problem = _check_form(function, priority, copies)
        if problem:
            return error(400, problem)
        self._batches += 1
        batch = f"b{self._batches}"
        rows = [JobRow(id=f"{batch}-{i}", batch=batch, index=i, function=function, background=background,
                       priority=cast("Priority", priority)) for i in range(1, copies + 1)]
        for row in rows:
            self.spawn(run_job(self.gateway, self.hub, session, row, payload))
        log.info("web.jobs.submitted", function=function, copies=copies, background=background, priority=priority)
        return JSONResponse({"batch": batch, "jobs": [r.view() for r in rows]}, status_code=202)


def _check_form(function: str, priority: str, copies: int) -> str | None:
    if not function:
        return "Choose a function to run."
    if len(function) > 255 or any(c.isspace() or not c.isprintable() for c in function):
        return "A function name is one word of printable characters, at most 255."
    if priority not in PRIORITIES:
        return f"Priority must be one of: {', '.join(PRIORITIES)}."
    if not 1 <= copies <= MAX_COPIES:
        return f"Copies must be between 1 and {MAX_COPIES}."
    return None


def _safe_name(filename: str) -> str:
    """The last path component, printable, at most 100 characters (it is shown and used for downloads)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in '"<>')
    return name[:100] or "photo"


def _attachment(filename: str) -> str:
    """Content-Disposition for any file name: an ASCII fallback plus the UTF-8 name (RFC 6266)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises :class:`UploadTooLarge` as soon as the body passes ``limit``."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise UploadTooLarge
        return message

    return wrapped


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
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


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


def create_app(servers: Sequence[str], *, max_upload_bytes: int = 50 * 1024 * 1024,
               store_budget: int = 512 * 1024 * 1024, connect_timeout: float = 5.0) -> Starlette:
    """Build the web app for ``servers`` ("host:port" each)."""
    web = WebApp(servers, max_upload_bytes=max_upload_bytes, store_budget=store_budget,
                 connect_timeout=connect_timeout)
    routes = [
        Route("/", web.index),
        Route("/api/config", web.config),
        Route("/api/events", web.events),
        Route("/api/servers", web.servers),
        Route("/api/photos", web.upload_photo, methods=["POST"]),
        Route("/api/jobs", web.submit_jobs, methods=["POST"]),
        Route("/photos/{photo_id}/{index}", web.photo_copy),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=web.lifespan, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.web = web
    app.add_middleware(_SecurityHeaders)
    return app
