"""The operator console's JSON API: failed jobs, queues over time, workers, and ``/metrics``.

Routes (every one behind :class:`~gearworker.web.security.Guard`: Host, and for
POSTs Origin and the CSRF token; the login when one is set):

- ``GET /api/console`` what is configured (failed-job store, workers' metrics, history spans)
- ``GET /api/failed?function=&q=&since=&until=&handle=&before=&limit=`` a page, newest first, the cursor of
  the next (``next``) and how many match (``total``)
- ``GET /api/failed/{id}`` one record in full, its workload previewed as text or a hex dump;
  ``GET /api/failed/{id}/workload`` the workload's bytes (a download)
- ``POST /api/failed/retry`` and ``POST /api/failed/delete``: JSON ``{"ids": [...]}`` or
  ``{"filter": {"function", "q", "since", "until"}}`` (every record matching it), logged as
  ``web.failed.retried`` / ``web.failed.deleted`` with their count
- ``GET /api/queues`` per server and function: waiting (gearmand's total minus running), running,
  workers, failed records; with ``web_worker_metrics``, done/failed per second and p50/p95
- ``GET /api/queues/history?function=&server=&span=hour|day`` the sampled history (:mod:`.history`)
- ``GET /api/workers`` gearmand's ``workers`` lists grouped by host, our processes' pid and version
- ``GET /metrics`` gearmand's state for Prometheus (:mod:`gearworker.exporter.collect`); also served
  without a login on ``web_metrics`` (``gearworker web --metrics HOST:PORT``)

The failed-job store is the workers' own (the ``failed_jobs`` setting), read
through :mod:`gearworker.failed.query` in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..address import parse_address
from ..exporter.collect import CONTENT_TYPE, ServerState, render
from ..failed import FailedStoreError, open_query
from ..failed.query import MAX_PAGE, Entry, FailedFilter, FailedQuery
from ..failed.query_folder import FolderQuery
from ..protocol import StatusRow
from .history import HISTORY_FILE, SPANS, History
from .state import WebApp
from .workerstats import WorkerStats

__all__ = ["Console", "ConsoleOptions"]

log = structlog.get_logger("gearworker.web")

PAGE_SIZE = 50
#: Most ids one retry or delete may name; more is a filter's job.
MAX_IDS = 1000
#: Most records one "retry everything matching" request submits; the answer says how many remain.
RETRY_PER_REQUEST = 5000
#: Body cap of the retry and delete routes: MAX_IDS ids and a filter.
ACTION_BODY = 128 * 1024
#: The longest error a list shows of a record (its own page shows all of it).
LIST_ERROR_CHARS = 500

#: How long the failed counts per function and the servers' versions are reused.
COUNTS_TTL = 2.0
VERSION_TTL = 60.0
_FOLDER_LISTING_TTL = 1.0


@dataclass(frozen=True)
class ConsoleOptions:
    """What the console is configured with (see ``docs/settings.md``)."""

    failed_jobs: str | None = None
    worker_metrics: tuple[str, ...] = ()
    metrics_listen: str | None = None
    sample_history: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> ConsoleOptions:
        return cls(
            failed_jobs=settings.failed_jobs,
            worker_metrics=tuple(settings.web_worker_metrics),
            metrics_listen=settings.web_metrics,
        )


class Console:
    """The console's state (failed-job queries, history, worker stats, metrics) and its routes."""

    def __init__(self, web: WebApp, options: ConsoleOptions) -> None:
        self.web = web
        self.options = options
        self.query: FailedQuery | None = None
        if options.failed_jobs:
            self.query = open_query(options.failed_jobs)
            if isinstance(self.query, FolderQuery):
                self.query.listing_ttl = _FOLDER_LISTING_TTL  # a burst of calls lists the folder once
        self.history = History(web.photos.root / HISTORY_FILE)
        self.worker_stats = WorkerStats(options.worker_metrics) if options.worker_metrics else None
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics_server: asyncio.Server | None = None
        self._versions: dict[str, tuple[float, str | None]] = {}
        self._counts: tuple[float, dict[str, int] | None] | None = None
        self._warming = False  # a folder store's first read runs: counts are not known yet

    # -- wiring ------------------------------------------------------------

    def forget_counts(self) -> None:
        """The failed counts changed (a retry, a delete): the next ask reads them again."""
        self._counts = None

    def lifespan(
        self, inner: Callable[[Starlette], AbstractAsyncContextManager[None]]
    ) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
        """The app's lifespan with the console's background work inside it."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with inner(app):
                await self.start()
                try:
                    yield
                finally:
                    await self.stop()

        return lifespan

    async def start(self) -> None:
        """Start sampling the queues, scraping the workers, and the login-free metrics listener when set."""
        loop = asyncio.get_running_loop()
        if self.options.sample_history:
            self._tasks.append(loop.create_task(self.history.run(self.web.gateway.cached_status)))
        if self.worker_stats is not None:
            self._tasks.append(loop.create_task(self.worker_stats.run()))
        if isinstance(self.query, FolderQuery):  # read every record once now, not at the first filtered page
            self._tasks.append(loop.create_task(self._warm(self.query)))
        elif self.query is not None:  # an sqlite store's indexes now (0.2 s at 100,000), not at the first visit
            self._tasks.append(loop.create_task(self._prepare(self.query)))
        if self.options.metrics_listen:
            from ..metrics.http import TEXT, Answer, serve_routes

            async def scrape() -> Answer:
                return 200, await self.render_metrics(), CONTENT_TYPE

            async def healthz() -> Answer:
                return 200, b"ok\n", TEXT

            host, port = parse_address(self.options.metrics_listen, default_host="127.0.0.1", default_port=None)
            self.metrics_server = await serve_routes({"/metrics": scrape, "/healthz": healthz}, host, port)
            bound = self.metrics_server.sockets[0].getsockname()[:2] if self.metrics_server.sockets else (host, port)
            log.info("web.metrics.listening", url=f"http://{bound[0]}:{bound[1]}/metrics")

    async def _warm(self, query: FolderQuery) -> None:
        started = time.monotonic()
        self._warming = True
        try:
            count = await asyncio.to_thread(query.warm)
        except FailedStoreError as e:
            log.warning("web.failed.store_error", error=str(e))
            return
        finally:
            self._warming = False
        log.info("web.failed.read", records=count, duration=round(time.monotonic() - started, 3))

    async def _prepare(self, query: FailedQuery) -> None:
        try:
            await asyncio.to_thread(query.page, FailedFilter(), limit=1, total=False)
        except FailedStoreError as e:
            log.warning("web.failed.store_error", error=str(e))

    async def stop(self) -> None:
        """Stop the background work; the history writes what it holds."""
        if self.metrics_server is not None:
            self.metrics_server.close()
            await self.metrics_server.wait_closed()
            self.metrics_server = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.history.close()

    # -- what is configured ------------------------------------------------

    async def info(self, request: Request) -> Response:
        return JSONResponse(
            {
                "failed_store": {"configured": self.query is not None, "kind": getattr(self.query, "kind", None)},
                "worker_metrics": list(self.options.worker_metrics),
                "history": {"spans": {k: {"seconds": v[0], "step": v[1]} for k, v in SPANS.items()}},
                "metrics": {"path": "/metrics", "listen": self.options.metrics_listen},
                "limits": {"page": MAX_PAGE, "ids": MAX_IDS, "retry_per_request": RETRY_PER_REQUEST},
            }
        )

    # -- failed jobs ---------------------------------------------------------
    async def failed_counts(self) -> dict[str, int] | None:
        """Records per function (reused for :data:`COUNTS_TTL`); None without a store or when it cannot be read."""
        if self.query is None or self._warming:  # a scrape must not wait seconds for a folder's first read
            return None
        now = time.monotonic()
        if self._counts is not None and now - self._counts[0] < COUNTS_TTL:
            return self._counts[1]
        try:
            counts: dict[str, int] | None = await asyncio.to_thread(self.query.counts_by_function)
        except FailedStoreError as e:
            log.warning("web.failed.store_error", error=str(e))
            counts = None
        self._counts = (time.monotonic(), counts)
        return counts

    async def recorded_failure(self, handle: str, *, since: float) -> dict[str, Any] | None:
        """The record of the job with ``handle`` failed at or after ``since``, if the store has it (for job rows)."""
        if self.query is None:
            return None
        filt = FailedFilter(handle=handle, since=since)
        with contextlib.suppress(FailedStoreError):
            page = await asyncio.to_thread(self.query.page, filt, limit=1, total=False)
            if page.entries:
                return listed(page.entries[0])
        return None

    # -- metrics ----------------------------------------------------------------------------------------

    async def render_metrics(self) -> bytes:
        status = await self.web.gateway.cached_status()
        states = []
        for server in status["servers"]:
            rows = [StatusRow(f["function"], f["queued"], f["running"], f["workers"]) for f in server["functions"]]
            version = await self._version(server["address"]) if server["ok"] else None
            states.append(ServerState(server["address"], bool(server["ok"]), rows, version))
        counts = await self.failed_counts()
        store_up = None if self.query is None or self._warming else counts is not None
        return render(states, counts, failed_store_up=store_up)

    async def _version(self, address: str) -> str | None:
        now = time.monotonic()
        cached = self._versions.get(address)
        if cached is not None and now - cached[0] < VERSION_TTL:
            return cached[1]
        version = None
        with contextlib.suppress(Exception):
            client = await self.web.gateway.client()
            answer = await client.admin("version", server=address)
            version = answer[0] if answer else None
        self._versions[address] = (now, version)
        return version

    async def metrics(self, request: Request) -> Response:
        return Response(await self.render_metrics(), media_type=CONTENT_TYPE)


# -- helpers ---------------------------------------------------------------------------------------------


def listed(entry: Entry) -> dict[str, Any]:
    view = entry.summary()
    if len(entry.error) > LIST_ERROR_CHARS:
        view["error"] = entry.error[:LIST_ERROR_CHARS] + "…"
        view["error_cut"] = True
    return view
