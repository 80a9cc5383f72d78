"""The console's failed-job routes: a page of records, one record and its workload, retry and delete.

``GET /api/failed`` pages newest first by cursor, with the filters of
:class:`~gearworker.failed.query.FailedFilter`; ``POST /api/failed/retry`` and
``/api/failed/delete`` take ``{"ids": [...]}`` or ``{"filter": {...}}``.  The
store is read and written in threads (:mod:`gearworker.failed.query`), never
on the event loop; a retry goes through :func:`gearworker.failed.retry.retry_jobs`,
as ``gearworker failed retry`` does.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..failed import FailedJob, FailedStoreError
from ..failed.query import MAX_PAGE, Entry, FailedFilter, parse_time
from ..failed.retry import Retried, retry_jobs
from .console import ACTION_BODY, MAX_IDS, PAGE_SIZE, RETRY_PER_REQUEST, Console, listed
from .security import BodyLimit, BodyTooLarge, client_host, refuse
from .service import explain

__all__ = ["FailedRoutes", "hexdump", "preview"]

log = structlog.get_logger("gearworker.web")

#: What a record's page shows of its workload: text up to this, else a hex dump of the first HEX_PREVIEW bytes.
TEXT_PREVIEW = 64 * 1024
HEX_PREVIEW = 4096
_ID_RE = re.compile(r"^[0-9A-Za-z_-][0-9A-Za-z_.-]{0,99}$")


class _BadRequest(Exception):
    """A request the console cannot act on; its text is the 400's sentence."""


class FailedRoutes:
    """The failed-job routes, over the console's store."""

    def __init__(self, console: Console) -> None:
        self.console = console

    @staticmethod
    def body_limits() -> dict[str, BodyLimit]:
        """The retry and delete routes' body caps, for the Guard."""
        too_many = f"Too many records at once: name at most {MAX_IDS}, or use a filter."
        return {
            "/api/failed/retry": BodyLimit(ACTION_BODY, too_many),
            "/api/failed/delete": BodyLimit(ACTION_BODY, too_many),
        }

    async def page(self, request: Request) -> Response:
        params = request.query_params
        try:
            filt = _filter(params)
            limit = _int(params.get("limit"), PAGE_SIZE, 1, MAX_PAGE)
        except _BadRequest as e:
            return refuse(400, str(e))
        if self.console.query is None:
            return JSONResponse({"configured": False, "records": [], "next": None, "total": 0, "limit": limit})
        try:
            page = await asyncio.to_thread(
                self.console.query.page, filt, cursor=params.get("before") or None, limit=limit
            )
        except FailedStoreError as e:
            return _store_error(e)
        return JSONResponse(
            {
                "configured": True,
                "records": [listed(e) for e in page.entries],
                "next": page.next,
                "total": page.total,
                "limit": limit,
                "filter": filt.to_json(),
            }
        )

    async def _one(self, request: Request) -> FailedJob | Response:
        job_id = request.path_params["job_id"]
        if self.console.query is None:
            return refuse(404, "No failed-job store is configured (the failed_jobs setting).")
        if not _ID_RE.match(job_id):
            return refuse(404, "There is no such failed job (any more).")
        try:
            return await asyncio.to_thread(self.console.query.get, job_id)
        except FailedStoreError as e:
            if str(e).startswith("no failed job") or "is not a failed job id" in str(e):
                return refuse(404, "There is no such failed job (any more).")
            return _store_error(e)

    async def one(self, request: Request) -> Response:
        job = await self._one(request)
        if isinstance(job, Response):
            return job
        view = Entry.of(job).summary()
        view["workload"] = preview(job.workload)
        view["workload_url"] = f"/api/failed/{job.id}/workload"
        return JSONResponse(view)

    async def workload(self, request: Request) -> Response:
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
        if self.console.query is None:
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
        force = body.get("force", False)
        if not isinstance(force, bool):  # "false" is a truthy string: only a JSON boolean forces
            return refuse(400, "force must be true or false.")
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

    async def delete(self, request: Request) -> Response:
        named = await self._action(request)
        if isinstance(named, Response):
            return named
        ids, filt, _ = named
        query = self.console.query
        assert query is not None
        try:
            if ids is not None:
                count = await asyncio.to_thread(query.delete, ids)
            else:
                assert filt is not None
                count = await asyncio.to_thread(query.delete_matching, filt)
        except FailedStoreError as e:
            return _store_error(e)
        self.console.forget_counts()
        log.info(
            "web.failed.deleted",
            count=count,
            by="ids" if ids is not None else "filter",
            ids=len(ids) if ids is not None else None,
            filter=filt.to_json() if filt is not None else None,
            client=client_host(request),
        )
        return JSONResponse({"deleted": count})

    async def retry(self, request: Request) -> Response:
        named = await self._action(request)
        if isinstance(named, Response):
            return named
        ids, filt, force = named
        query = self.console.query
        assert query is not None
        started = time.time()
        try:
            client = await self.console.web.gateway.client()
        except Exception as e:
            return refuse(503, explain(e, self.console.web.gateway.servers))
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
        self.console.forget_counts()
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
            where = ", ".join(self.console.web.gateway.servers)
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


def _int(text: str | None, default: int, low: int, high: int) -> int:
    if not text:
        return default
    if not (text.isascii() and text.isdigit()):  # "²" is a digit to str.isdigit, not to int()
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


def _store_error(e: FailedStoreError) -> Response:
    log.warning("web.failed.store_error", error=str(e))
    if "cursor" in str(e):
        return refuse(400, "That page no longer exists: go back to the first page.")
    return refuse(503, "The failed-job store cannot be read just now.")
