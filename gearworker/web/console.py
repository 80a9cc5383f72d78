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
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..address import parse_address
from ..clientid import parse_client_id
from ..errors import NoServerAvailable
from ..exporter.collect import CONTENT_TYPE, ServerState, render
from ..failed import FailedJob, FailedStoreError
from ..failed.query import MAX_PAGE, Entry, FailedFilter, FailedQuery, FolderQuery, open_query, parse_time
from ..failed.retry import Retried, retry_jobs
from ..protocol import StatusRow
from .history import HISTORY_FILE, SPANS, History
from .security import BodyLimit, BodyTooLarge, client_host, refuse
from .service import explain
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
#: What a record's page shows of its workload: text up to this, else a hex dump of the first HEX_PREVIEW bytes.
TEXT_PREVIEW = 64 * 1024
HEX_PREVIEW = 4096
LIST_ERROR_CHARS = 500
#: How long the failed counts per function and the servers' versions are reused.
COUNTS_TTL = 2.0
VERSION_TTL = 60.0
_FOLDER_LISTING_TTL = 1.0
_ID_RE = re.compile(r"^[0-9A-Za-z_-][0-9A-Za-z_.-]{0,99}$")


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


class _BadRequest(Exception):
    """A request the console cannot act on; its text is the 400's sentence."""


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

    def routes(self) -> list[Route]:
        return [
            Route("/api/console", self.info),
            Route("/api/failed", self.failed_list),
            Route("/api/failed/retry", self.failed_retry, methods=["POST"]),
            Route("/api/failed/delete", self.failed_delete, methods=["POST"]),
            Route("/api/failed/{job_id}", self.failed_one),
            Route("/api/failed/{job_id}/workload", self.failed_workload),
            Route("/api/queues", self.queues),
            Route("/api/queues/history", self.queue_history),
            Route("/api/workers", self.workers),
            Route("/metrics", self.metrics),
        ]

    def body_limits(self) -> dict[str, BodyLimit]:
        too_many = f"Too many records at once: name at most {MAX_IDS}, or use a filter."
        return {
            "/api/failed/retry": BodyLimit(ACTION_BODY, too_many),
            "/api/failed/delete": BodyLimit(ACTION_BODY, too_many),
        }

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

    async def failed_list(self, request: Request) -> Response:
        params = request.query_params
        try:
            filt = _filter(params)
            limit = _int(params.get("limit"), PAGE_SIZE, 1, MAX_PAGE)
        except _BadRequest as e:
            return refuse(400, str(e))
        if self.query is None:
            return JSONResponse({"configured": False, "records": [], "next": None, "total": 0, "limit": limit})
        try:
            page = await asyncio.to_thread(self.query.page, filt, cursor=params.get("before") or None, limit=limit)
        except FailedStoreError as e:
            return _store_error(e)
        return JSONResponse(
            {
                "configured": True,
                "records": [_listed(e) for e in page.entries],
                "next": page.next,
                "total": page.total,
                "limit": limit,
                "filter": filt.to_json(),
            }
        )

    async def _one(self, request: Request) -> FailedJob | Response:
        job_id = request.path_params["job_id"]
        if self.query is None:
            return refuse(404, "No failed-job store is configured (the failed_jobs setting).")
        if not _ID_RE.match(job_id):
            return refuse(404, "There is no such failed job (any more).")
        try:
            return await asyncio.to_thread(self.query.get, job_id)
        except FailedStoreError as e:
            if str(e).startswith("no failed job") or "is not a failed job id" in str(e):
                return refuse(404, "There is no such failed job (any more).")
            return _store_error(e)

    async def failed_one(self, request: Request) -> Response:
        job = await self._one(request)
        if isinstance(job, Response):
            return job
        view = Entry.of(job).summary()
        view["workload"] = preview(job.workload)
        view["workload_url"] = f"/api/failed/{job.id}/workload"
        return JSONResponse(view)

    async def failed_workload(self, request: Request) -> Response:
        job = await self._one(request)
        if isinstance(job, Response):
            return job
        name = re.sub(r"[^0-9A-Za-z_.-]", "_", f"failed-{job.id}-{job.function}")[:120]
        return Response(
            job.workload,
            media_type="application/octet-stream",
            headers={"content-disposition": f'attachment; filename="{name}.bin"', "cache-control": "no-store"},
        )

    async def _action(self, request: Request) -> tuple[list[str] | None, FailedFilter | None, bool] | Response:
        """The ids or the filter a retry or delete names; or the refusal."""
        if self.query is None:
            return refuse(409, "No failed-job store is configured (the failed_jobs setting).")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return refuse(415, "Send the request as application/json.")
        try:
            body = json.loads(await request.body())
        except BodyTooLarge:
            return refuse(413, f"Too many records at once: name at most {MAX_IDS}, or use a filter.")
        except ValueError:
            return refuse(400, "The request could not be read (JSON expected).")
        if not isinstance(body, dict) or ("ids" in body) == ("filter" in body):
            return refuse(400, 'Name the records: {"ids": [...]} or {"filter": {...}}.')
        force = bool(body.get("force", False))
        if "ids" in body:
            ids = body["ids"]
            if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids):
                return refuse(400, "ids must be a list of record ids.")
            if len(ids) > MAX_IDS:
                return refuse(413, f"Too many records at once: name at most {MAX_IDS}, or use a filter.")
            ids = list(dict.fromkeys(str(i) for i in ids))
            if not all(_ID_RE.match(i) for i in ids):
                return refuse(400, "That is not a failed job id.")
            return ids, None, force
        if not isinstance(body["filter"], dict):
            return refuse(400, "filter must be an object: function, q, since, until.")
        try:
            return None, _filter({str(k): "" if v is None else str(v) for k, v in body["filter"].items()}), force
        except _BadRequest as e:
            return refuse(400, str(e))

    async def failed_delete(self, request: Request) -> Response:
        named = await self._action(request)
        if isinstance(named, Response):
            return named
        ids, filt, _ = named
        query = self.query
        assert query is not None
        try:
            if ids is not None:
                count = await asyncio.to_thread(query.delete, ids)
            else:
                assert filt is not None
                count = await asyncio.to_thread(query.delete_matching, filt)
        except FailedStoreError as e:
            return _store_error(e)
        self._counts = None
        log.info(
            "web.failed.deleted",
            count=count,
            by="ids" if ids is not None else "filter",
            ids=len(ids) if ids is not None else None,
            filter=filt.to_json() if filt is not None else None,
            client=client_host(request),
        )
        return JSONResponse({"deleted": count})

    async def failed_retry(self, request: Request) -> Response:
        named = await self._action(request)
        if isinstance(named, Response):
            return named
        ids, filt, force = named
        query = self.query
        assert query is not None
        started = time.time()
        try:
            client = await self.web.gateway.client()
        except Exception as e:
            return refuse(503, explain(e, self.web.gateway.servers))
        results: list[Retried] = []
        remaining = 0
        missing = 0
        try:
            if ids is not None:
                jobs = await asyncio.to_thread(query.get_many, ids)
                missing = len(ids) - len(jobs)
                results = await retry_jobs(client, query, jobs, force=force)
            else:
                assert filt is not None
                # Newest first, down from where the request started: jobs that fail again meanwhile are
                # recorded as newer records, above the cursor, and are never retried twice by it.
                until = started if filt.until is None else min(filt.until, started)
                scope = FailedFilter(filt.function, filt.text, filt.since, until, filt.handle)
                cursor: str | None = None
                while len(results) < RETRY_PER_REQUEST:
                    size = min(500, RETRY_PER_REQUEST - len(results))
                    page = await asyncio.to_thread(query.page, scope, cursor=cursor, limit=size, total=cursor is None)
                    if cursor is None:
                        remaining = page.total
                    jobs = await asyncio.to_thread(query.get_many, [e.id for e in page.entries])
                    results += await retry_jobs(client, query, jobs, force=force)
                    if page.next is None:
                        break
                    cursor = page.next
                remaining = max(0, remaining - len(results))
        except FailedStoreError as e:
            return _store_error(e)
        self._counts = None
        done = [r for r in results if r.ok]
        skipped = [r for r in results if not r.ok]
        log.info(
            "web.failed.retried",
            count=len(done),
            skipped=len(skipped),
            missing=missing,
            remaining=remaining,
            by="ids" if ids is not None else "filter",
            filter=filt.to_json() if filt is not None else None,
            client=client_host(request),
        )
        if skipped:
            log.warning("web.failed.retry_skipped", count=len(skipped), first=skipped[0].problem)
        if skipped and not done and not any(r.truncated for r in skipped):
            where = ", ".join(self.web.gateway.servers)
            return refuse(503, f"Nothing was retried: no job server took the jobs ({where}). {skipped[0].problem}")
        return JSONResponse(
            {
                "retried": len(done),
                "skipped": len(skipped),
                "missing": missing,
                "remaining": remaining,
                "results": [r.to_json() for r in results[:MAX_IDS]],
            }
        )

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
                return _listed(page.entries[0])
        return None

    # -- queues, history, workers -------------------------------------------------------------------

    async def queues(self, request: Request) -> Response:
        status = await self.web.gateway.cached_status()
        counts = await self.failed_counts()
        stats = self.worker_stats.summary() if self.worker_stats is not None else None
        servers = []
        totals: dict[str, dict[str, Any]] = {}

        def total(function: str) -> dict[str, Any]:
            return totals.setdefault(
                function, {"function": function, "total": 0, "waiting": 0, "running": 0, "workers": 0}
            )

        for server in status["servers"]:
            rows = [_queue_row(f) for f in server["functions"]]
            for row in rows:
                summed = total(row["function"])
                for key in ("total", "waiting", "running", "workers"):
                    summed[key] += row[key]
            servers.append(
                {"address": server["address"], "ok": server["ok"], "error": server["error"], "functions": rows}
            )
        idle = {"done_per_s": 0.0, "failed_per_s": 0.0, "p50": None, "p95": None}
        for function in sorted(set(counts or {}) | set(stats["functions"] if stats else {})):
            total(function)  # known from the store or the workers, if not from gearmand
        for function, summed in totals.items():
            summed["failed_records"] = None if counts is None else counts.get(function, 0)
            if stats is not None:
                summed.update(stats["functions"].get(function, idle))
        return JSONResponse(
            {
                "servers": servers,
                "functions": [totals[f] for f in sorted(totals)],
                "failed_store": self.query is not None,
                "worker_metrics": None if stats is None else {"window": stats["window"], "workers": stats["workers"]},
                "time": status.get("time", time.time()),
            }
        )

    async def queue_history(self, request: Request) -> Response:
        params = request.query_params
        span = params.get("span", "hour")
        if span not in SPANS:
            return refuse(400, f"span must be one of: {', '.join(SPANS)}.")
        try:
            data = await self.history.query(
                span, function=params.get("function") or None, server=params.get("server") or None
            )
        except Exception as e:
            log.warning("web.history.read_error", error=f"{type(e).__name__}: {e}")
            return refuse(503, "The queue history cannot be read just now.")
        return JSONResponse(data)

    async def workers(self, request: Request) -> Response:
        servers = self.web.gateway.servers
        tables: dict[str, Any] = {}
        failure: Exception | None = None
        try:
            client = await self.web.gateway.client()
            tables = await client.workers()
        except Exception as e:
            failure = e
        listed = [
            {
                "address": s,
                "ok": s in tables,
                "error": None if s in tables else explain(failure or NoServerAvailable(s), [s]),
                "clients": sum(1 for r in tables.get(s, ()) if not r.functions),
            }
            for s in servers
        ]
        return JSONResponse({"servers": listed, "hosts": group_workers(tables), "time": time.time()})

    # -- metrics -------------------------------------------------------------------------------------

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


def _int(text: str | None, default: int, low: int, high: int) -> int:
    if not text:
        return default
    if not text.isdigit():
        raise _BadRequest(f"{text!r} is not a number.")
    return max(low, min(high, int(text)))


def _filter(params: Mapping[str, str]) -> FailedFilter:
    """The filter in query parameters (or a JSON filter object): function, q, since, until, handle."""

    def text(name: str, limit: int) -> str | None:
        value = (params.get(name) or "").strip()
        if len(value) > limit:
            raise _BadRequest(f"{name} is too long (at most {limit} characters).")
        return value or None

    def moment(name: str) -> float | None:
        value = text(name, 64)
        if value is None:
            return None
        try:
            return parse_time(value)
        except ValueError:
            raise _BadRequest(f"{name} must be Unix seconds or an ISO 8601 time, not {value!r}.") from None

    return FailedFilter(
        function=text("function", 255),
        text=text("q", 200),
        since=moment("since"),
        until=moment("until"),
        handle=text("handle", 255),
    )


def _listed(entry: Entry) -> dict[str, Any]:
    view = entry.summary()
    if len(entry.error) > LIST_ERROR_CHARS:
        view["error"] = entry.error[:LIST_ERROR_CHARS] + "…"
        view["error_cut"] = True
    return view


def preview(workload: bytes) -> dict[str, Any]:
    """A workload as a page shows it: UTF-8 text (up to :data:`TEXT_PREVIEW` bytes), else a hex dump."""
    head = workload[:TEXT_PREVIEW]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3 or len(workload) <= TEXT_PREVIEW:  # not just a character cut in two at the end
            return {
                "kind": "hex",
                "hex": hexdump(workload[:HEX_PREVIEW]),
                "cut": len(workload) > HEX_PREVIEW,
                "bytes": len(workload),
            }
        text = head[: e.start].decode("utf-8")
    if any(not (c.isprintable() or c in "\n\r\t") for c in text):
        return {
            "kind": "hex",
            "hex": hexdump(workload[:HEX_PREVIEW]),
            "cut": len(workload) > HEX_PREVIEW,
            "bytes": len(workload),
        }
    return {"kind": "text", "text": text, "cut": len(workload) > TEXT_PREVIEW, "bytes": len(workload)}


def hexdump(data: bytes) -> str:
    """``00000000  7b 22 69 64  ...  |{"id...|`` lines, 16 bytes each."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexes:<47}  |{text}|")
    return "\n".join(lines)


def _queue_row(f: Mapping[str, Any]) -> dict[str, Any]:
    queued, running = int(f["queued"]), int(f["running"])
    return {
        "function": f["function"],
        "total": queued,
        "waiting": max(0, queued - running),
        "running": running,
        "workers": int(f["workers"]),
    }


def group_workers(tables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """gearmand's ``workers`` rows (connections with functions) by host, then by process.

    A gearworker process names its host, pid and version in its client id; any
    other worker is grouped by its address (the host as gearmand saw it) and
    client id.
    """
    hosts: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for server, rows in tables.items():
        for row in rows:
            if not row.functions:
                continue  # a client, not a worker
            ours = parse_client_id(row.client_id)
            host = ours.host if ours is not None else row.address
            process = hosts.setdefault(host, {}).setdefault(
                (row.client_id, row.address if ours is None else ""),
                {
                    "client_id": row.client_id,
                    "gearworker": ours is not None,
                    "pid": ours.pid if ours is not None else None,
                    "version": ours.version if ours is not None else None,
                    "addresses": set(),
                    "functions": set(),
                    "servers": set(),
                    "connections": 0,
                },
            )
            process["addresses"].add(row.address)
            process["functions"].update(row.functions)
            process["servers"].add(server)
            process["connections"] += 1
    out = []
    for host in sorted(hosts):
        processes = []
        for process in sorted(hosts[host].values(), key=lambda p: (p["pid"] or 0, p["client_id"])):
            processes.append(
                {
                    **process,
                    "addresses": sorted(process["addresses"]),
                    "functions": sorted(process["functions"]),
                    "servers": sorted(process["servers"]),
                }
            )
        functions = sorted({f for p in processes for f in p["functions"]})
        out.append({"host": host, "processes": processes, "functions": functions})
    return out


def _store_error(e: FailedStoreError) -> Response:
    log.warning("web.failed.store_error", error=str(e))
    if "cursor" in str(e):
        return refuse(400, "That page no longer exists: go back to the first page.")
    return refuse(503, "The failed-job store cannot be read just now.")
