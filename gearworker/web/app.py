"""The Starlette app: :func:`create_app` wires every route, the guard and the protective headers.

Routes (everything the app serves comes from its own ``static/`` folder or
from its storage root by an id it made; no route takes a file path from the user):

- ``GET /`` the single page (Photos, Jobs and Servers tabs), ``/static/...``; ``GET /login``
- ``GET /api/config`` limits the page checks before uploading, and the boot id
- ``GET /api/events?session=S`` this page's job events, every photo's, and the servers table (SSE)
- ``GET /api/servers`` the admin ``status`` table (JSON)
- ``GET /api/photos?offset=&limit=`` stored photos, newest first; ``POST`` one photo (multipart ``photo``);
  ``DELETE /api/photos/{id}``; ``GET /photos/{id}/{n}`` a resized copy (ETag, Cache-Control)
- ``POST /api/photos/{id}/retry`` resize a failed photo again from its original
- ``POST /api/jobs`` the Jobs form (JSON only); ``POST /api/jobs/{id}/cancel``; ``POST /api/jobs/resume``
- ``POST /api/login``, ``POST /api/logout`` when a password is set
- the console (:mod:`.console`): ``/api/console``, ``/api/failed...``, ``/api/queues...``,
  ``/api/workers``, ``/metrics``

The handlers live in :mod:`.pages` (pages, login, streams) and :mod:`.routes`
(photos and jobs), over the shared :class:`~gearworker.web.state.WebApp`.
:mod:`gearworker.web.security` checks every request first (Host, Origin,
CSRF token, login, body caps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .console import Console, ConsoleOptions
from .console_failed import FailedRoutes
from .console_queues import QueueRoutes
from .pages import Pages
from .photos import human_size
from .routes import JobRoutes, PhotoRoutes
from .security import BodyLimit, Guard, GuardConfig, allowed_hosts, refuse
from .state import MAX_PAYLOAD, MULTIPART_OVERHEAD, STATIC, WebApp, WebOptions

__all__ = ["SECURITY_HEADERS", "ConsoleOptions", "WebApp", "WebOptions", "create_app"]

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


async def _not_found(request: Request, exc: Exception) -> Response:
    return refuse(404, "There is nothing at this address.")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return refuse(405, "This address does not take that kind of request.")


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


def create_app(
    servers: Sequence[str], options: WebOptions | None = None, *, console: ConsoleOptions | None = None, **kwargs: Any
) -> Starlette:
    """Build the web app for ``servers`` ("host:port" each); ``kwargs`` are :class:`WebOptions` fields."""
    options = dataclasses.replace(options or WebOptions(), **kwargs)
    web = WebApp(servers, options)
    pages, photos, jobs = Pages(web), PhotoRoutes(web), JobRoutes(web)
    operator = Console(web, console or ConsoleOptions())
    failed, queues = FailedRoutes(operator), QueueRoutes(operator)
    if operator.query is not None:  # a background job the page sent that failed for good says so
        web.job_ctx.recorded = operator.recorded_failure
    routes = [
        Route("/", pages.index),
        Route("/login", pages.login_page),
        Route("/api/config", pages.config),
        Route("/api/login", pages.do_login, methods=["POST"]),
        Route("/api/logout", pages.do_logout, methods=["POST"]),
        Route("/api/events", pages.events),
        Route("/api/servers", pages.servers),
        Route("/api/photos", photos.list, methods=["GET"]),
        Route("/api/photos", photos.upload, methods=["POST"]),
        Route("/api/photos/{photo_id}", photos.delete, methods=["DELETE"]),
        Route("/api/photos/{photo_id}/retry", photos.retry, methods=["POST"]),
        Route("/photos/{photo_id}/{index}", photos.copy),
        Route("/api/jobs", jobs.submit, methods=["POST"]),
        Route("/api/jobs/resume", jobs.resume, methods=["POST"]),
        Route("/api/jobs/{row_id}/cancel", jobs.cancel, methods=["POST"]),
        Route("/api/console", operator.info),
        Route("/api/failed", failed.page),
        Route("/api/failed/retry", failed.retry, methods=["POST"]),
        Route("/api/failed/delete", failed.delete, methods=["POST"]),
        Route("/api/failed/{job_id}", failed.one),
        Route("/api/failed/{job_id}/workload", failed.workload),
        Route("/api/queues", queues.queues),
        Route("/api/queues/history", queues.history),
        Route("/api/workers", queues.workers),
        Route("/metrics", operator.metrics),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    upload_limit = options.max_upload_bytes + MULTIPART_OVERHEAD
    guard = GuardConfig(
        hosts=allowed_hosts(options.listen_host, options.allowed_hosts, options.listen_port),
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
            **failed.body_limits(),
        },
        password_hash=options.password_hash,
        logins=web.logins,
    )
    app = Starlette(
        routes=routes,
        lifespan=operator.lifespan(web.lifespan),
        exception_handlers={404: _not_found, 405: _not_allowed},
    )
    app.state.web = web
    app.state.console = operator
    app.add_middleware(Guard, config=guard)
    app.add_middleware(_SecurityHeaders)
    return app
