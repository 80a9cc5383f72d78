"""The routes that change things: photos (upload, list, delete, download) and jobs (submit, cancel, resume).

Every body reaching these handlers has passed :class:`~gearworker.web.security.Guard`
(Host, Origin, CSRF token, login, body cap); the handlers add the per-client
rate limit, the plain-words checks of what was sent, and log every refusal.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import structlog
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from .events import SESSION_RE
from .jobs import JobRow, resume_rows, run_job
from .photos import ACCEPTED, OUTPUT_FORMATS, Photo, human_size, new_id, output_format, sniff
from .security import BodyTooLarge, client_host, refuse
from .service import run_photo
from .state import MAX_COPIES, MAX_PAYLOAD, PRIORITIES, WebApp

if TYPE_CHECKING:
    from ..client import Priority

log = structlog.get_logger("gearworker.web")

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_PHOTO_ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: How long a browser may reuse a copy without asking (copies never change under one URL).
COPY_MAX_AGE = 86400
PAGE_SIZE = 20
BAD_SESSION = "This page's session id is missing or malformed; reload the page."


class PhotoRoutes:
    """Upload, list, delete and serve the photos kept under the storage root."""

    def __init__(self, web: WebApp) -> None:
        self.web = web

    def _rejected(self, request: Request, status: int, message: str, reason: str, **kw: Any) -> Response:
        log.warning("web.photo.rejected", reason=reason, status=status, client=client_host(request), **kw)
        return refuse(status, message)

    async def upload(self, request: Request) -> Response:
        web = self.web
        if not SESSION_RE.match(request.query_params.get("session", "")):
            return self._rejected(request, 400, BAD_SESSION, "session")
        choice = request.query_params.get("format", "auto")
        if choice not in OUTPUT_FORMATS:
            return self._rejected(request, 400, f"Format must be one of: {', '.join(OUTPUT_FORMATS)}.", "format")
        if (wait := web.rate.take(client_host(request))) > 0:
            return self._rejected(request, 429, f"Too many uploads at once: try again in {int(wait)} s.", "rate_limit")
        too_big = f"That file is too big: photos may be up to {human_size(web.max_upload_bytes)}."
        try:
            form = await request.form(max_files=1, max_fields=4)
        except BodyTooLarge:
            return self._rejected(request, 413, too_big, "too_large")
        except ClientDisconnect:
            return self._rejected(request, 400, "The upload was interrupted.", "disconnect")
        except HTTPException as e:
            return self._rejected(request, 400, f"That upload could not be read: {e.detail}", "unreadable")
        try:
            upload = form.get("photo")
            if not isinstance(upload, UploadFile):
                return self._rejected(request, 400, "No file was sent: choose a photo to upload.", "no_file")
            name = _safe_name(upload.filename or "photo")
            key = str(form.get("key") or "")
            size = upload.size if upload.size is not None else len(await upload.read())
            if size > web.max_upload_bytes:
                return self._rejected(request, 413, too_big, "too_large", bytes=size)
            if not size:
                return self._rejected(request, 400, f"“{name}” is empty: choose a photo to upload.", "empty")
            await upload.seek(0)
            head = await upload.read(64 * 1024)  # enough for the format and any transparency marks
            if sniff(head[:16]) is None:
                return self._rejected(
                    request,
                    415,
                    f"“{name}” is not an image we can read (we take {ACCEPTED}).",
                    "not_an_image",
                    name=name,
                )
            await upload.seek(0)
            photo = Photo(
                id=new_id(),
                key=key if _KEY_RE.match(key) else "",
                name=name,
                upload_bytes=size,
                format=output_format(choice, head),
                source_format=sniff(head[:16]) or "",
            )
            await asyncio.to_thread(web.photos.add, photo, upload.file)
        finally:
            await form.close()
        web.hub.broadcast("photo", photo.view())
        web.spawn(run_photo(web.photo_ctx, photo, None))
        log.info("web.photo.accepted", photo=photo.id, bytes=size, format=photo.format)
        return JSONResponse(photo.view(), status_code=202)

    async def list(self, request: Request) -> Response:
        offset = _int(request.query_params.get("offset"), 0, 0, 10**9)
        limit = _int(request.query_params.get("limit"), PAGE_SIZE, 1, 100)
        photos = self.web.photos.page(offset, limit)
        return JSONResponse(
            {"photos": [p.view() for p in photos], "total": len(self.web.photos), "offset": offset, "limit": limit}
        )

    async def delete(self, request: Request) -> Response:
        photo_id = request.path_params["photo_id"]
        if not _PHOTO_ID_RE.match(photo_id) or not await asyncio.to_thread(self.web.photos.delete, photo_id):
            return refuse(404, "That photo is not here (any more).")
        self.web.hub.broadcast("photo-deleted", {"id": photo_id})
        log.info("web.photo.deleted", photo=photo_id, client=client_host(request))
        return JSONResponse({"deleted": photo_id})

    async def retry(self, request: Request) -> Response:
        """Resize a failed photo again from its original on disk (a job server restarted mid-resize...)."""
        web = self.web
        photo_id = request.path_params["photo_id"]
        photo = web.photos.get(photo_id) if _PHOTO_ID_RE.match(photo_id) else None
        if photo is None:
            return refuse(404, "That photo is not here (any more).")
        if photo.state != "failed":
            return refuse(409, "Only a photo whose resize failed can be resized again.")
        if not await asyncio.to_thread(web.photos.original(photo).is_file):
            return refuse(410, "That photo's original is no longer on disk: upload it again.")
        if (wait := web.rate.take(client_host(request))) > 0:
            return refuse(
                429, f"Too many jobs from here: try again in {int(wait)} s.", **{"retry-after": str(int(wait))}
            )
        photo.state, photo.error, photo.numerator, photo.denominator = "queued", None, 0, 0
        await asyncio.to_thread(web.photos.save, photo)
        web.hub.broadcast("photo", photo.view())
        web.spawn(run_photo(web.photo_ctx, photo, None))
        log.info("web.photo.retry", photo=photo.id, client=client_host(request))
        return JSONResponse(photo.view(), status_code=202)

    async def copy(self, request: Request) -> Response:
        photo_id, index = request.path_params["photo_id"], request.path_params["index"]
        found = (
            self.web.photos.copy_path(photo_id, int(index))
            if _PHOTO_ID_RE.match(photo_id) and index.isdigit() and len(index) < 4
            else None
        )
        if found is None:
            return refuse(404, "That photo is not here (any more).")
        photo, path = found
        stored = photo.copies[int(index)]
        # A copy never changes under its URL: its id, index and size name it.
        etag = f'"{photo.id[:16]}-{index}-{stored.bytes}"'
        # Same-origin only: another site cannot embed a copy (an <img> on its page), even with the login cookie.
        headers = {
            "cache-control": f"private, max-age={COPY_MAX_AGE}",
            "etag": etag,
            "cross-origin-resource-policy": "same-origin",
        }
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=headers)
        if request.query_params.get("download"):
            headers["content-disposition"] = _attachment(photo.view()["copies"][int(index)]["filename"])
        if not path.is_file():
            return refuse(404, "That photo's file is missing from the storage folder.")
        return FileResponse(path, media_type=stored.media_type, headers=headers)


class JobRoutes:
    """The Jobs form: submit (JSON only, rate-limited), cancel, and re-sync after a restart."""

    def __init__(self, web: WebApp) -> None:
        self.web = web

    async def submit(self, request: Request) -> Response:
        web = self.web
        session = request.query_params.get("session", "")
        if not SESSION_RE.match(session):
            return refuse(400, BAD_SESSION)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return refuse(415, "Send the form as application/json.")
        try:
            body = await request.body()
        except BodyTooLarge:
            return refuse(413, f"The payload is too big: at most {human_size(MAX_PAYLOAD)} from this form.")
        try:
            form = json.loads(body)
            function = str(form.get("function", "")).strip()
            payload = str(form.get("payload", "")).encode()
            priority = str(form.get("priority", "normal"))
            background = bool(form.get("background", False))
            copies = int(form.get("copies", 1))
        except (ValueError, TypeError, AttributeError):
            return refuse(400, "The form could not be read; reload the page and try again.")
        if len(payload) > MAX_PAYLOAD:
            return refuse(413, f"The payload is too big: at most {human_size(MAX_PAYLOAD)} from this form.")
        problem = _check_form(function, priority, copies)
        if problem:
            return refuse(400, problem)
        if (wait := web.rate.take(client_host(request), copies)) > 0:
            log.warning("web.jobs.rate_limited", client=client_host(request), copies=copies, retry_after=wait)
            return refuse(
                429,
                f"Too many jobs from here: try again in {int(wait)} s (at most {web.options.rate_limit} a minute).",
                **{"retry-after": str(int(wait))},
            )
        batch = web.next_batch()
        rows = [
            JobRow(
                id=f"{batch}-{i}",
                batch=batch,
                index=i,
                function=function,
                background=background,
                priority=cast("Priority", priority),
            )
            for i in range(1, copies + 1)
        ]
        for row in rows:
            web.jobs.add(session, row)
            row.task = web.spawn(run_job(web.job_ctx, session, row, payload))
        log.info("web.jobs.submitted", function=function, copies=copies, background=background, priority=priority)
        return JSONResponse({"batch": batch, "jobs": [r.view() for r in rows]}, status_code=202)

    async def cancel(self, request: Request) -> Response:
        session = request.query_params.get("session", "")
        row = self.web.jobs.get(session, request.path_params["row_id"]) if SESSION_RE.match(session) else None
        if row is None:
            return refuse(404, "This page has no such job (any more).")
        if row.final or row.task is None or row.background:
            return refuse(409, "Only a foreground job that has not ended can be cancelled.")
        row.cancel_requested = True
        row.task.cancel()
        log.info("web.job.cancel", job=row.id, function=row.function, handle=row.handle)
        return JSONResponse({"id": row.id}, status_code=202)

    async def resume(self, request: Request) -> Response:
        session = request.query_params.get("session", "")
        if not SESSION_RE.match(session):
            return refuse(400, BAD_SESSION)
        try:
            known = json.loads(await request.body()).get("jobs", [])
        except (ValueError, AttributeError, BodyTooLarge):
            return refuse(400, "The list of jobs could not be read.")
        if not isinstance(known, list):
            return refuse(400, "The list of jobs could not be read.")
        rows = resume_rows(self.web.job_ctx, self.web.jobs, session, known, self.web.spawn)
        return JSONResponse({"jobs": [r.view() for r in rows], "boot": self.web.hub.boot})


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


def _int(text: str | None, default: int, low: int, high: int) -> int:
    return max(low, min(high, int(text))) if text and text.isdigit() else default


def _safe_name(filename: str) -> str:
    """The last path component, printable, at most 100 characters (it is shown and used for downloads)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in '"<>')
    return name[:100] or "photo"


def _attachment(filename: str) -> str:
    """Content-Disposition for any file name: an ASCII fallback plus the UTF-8 name (RFC 6266)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
