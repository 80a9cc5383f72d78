"""What the web app does with the job servers, through the project's own client.

Kept apart from the HTTP routes so that each piece is small: :class:`Gateway`
owns the one :class:`~gearworker.client.Client`, :func:`explain` turns
exceptions into sentences a person can act on, and the ``run_*`` coroutines
are the background tasks behind an upload or a form submission.  Each task
publishes the full state of its row on every change, so the page only ever
re-renders the latest state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..client import Client, Priority, ServerRefused
from ..errors import ConnectionLost, JobFailed, NoServerAvailable
from .events import Hub
from .photos import Photo, PhotoStore

log = structlog.get_logger("gearworker.web")

#: How long a photo may wait and run before we give up on it.
PHOTO_TIMEOUT = 300.0
#: How often a background job's status is asked for, and for how long at most.
BACKGROUND_POLL = 1.0
BACKGROUND_WATCH = 3600.0
#: Longest result text sent to the page.
MAX_RESULT_CHARS = 4000


class Gateway:
    """The app's one client; connected on first use so the app starts without a server."""

    def __init__(self, servers: Sequence[str], *, connect_timeout: float = 5.0) -> None:
        self.servers = list(servers)
        self.connect_timeout = connect_timeout
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        """The connected client; raises :class:`NoServerAvailable` when no server answers."""
        async with self._lock:
            if self._client is None:
                client = Client(self.servers, connect_timeout=self.connect_timeout)
                await client.__aenter__()
                self._client = client
            return self._client

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                client, self._client = self._client, None
                await client.close()

    async def server_status(self) -> dict[str, Any]:
        """``{"servers": [{"address", "ok", "error", "functions": [...]}], "functions": [...]}``."""
        status: dict[str, Any] = {}
        failure: Exception | None = None
        try:
            client = await self.client()
            status = await client.server_status()
        except Exception as e:
            failure = e  # every server failed; a missing key means that one server did not answer
        servers: list[dict[str, Any]] = []
        for address in self.servers:
            rows = status.get(address)
            error = None if rows is not None else explain(failure or NoServerAvailable(address), [address])
            servers.append({"address": address, "ok": rows is not None, "error": error,
                            "functions": _rows(rows or [])})
        functions = sorted({f["function"] for s in servers for f in s["functions"]})
        return {"servers": servers, "functions": functions, "time": time.time()}


def _rows(rows: Sequence[Any]) -> list[dict[str, Any]]:
    table = [{"function": r.function, "queued": r.queued, "running": r.running, "workers": r.workers} for r in rows]
    return sorted(table, key=lambda r: str(r["function"]))


def explain(exc: BaseException, servers: Sequence[str]) -> str:
    """One sentence, in plain words, for what went wrong."""
    where = ", ".join(servers) or "the configured address"
    if isinstance(exc, ServerRefused):  # a subclass of NoServerAvailable: the server answered, and said no
        return f"The job server refused the job: {exc}"
    if isinstance(exc, NoServerAvailable):
        return f"No job server reachable at {where}."
    if isinstance(exc, JobFailed):
        return f"The job failed: {exc.message}" if exc.message else "The job failed (the worker gave no reason)."
    if isinstance(exc, TimeoutError):
        return "The job took too long: no worker finished it in time."
    if isinstance(exc, ConnectionLost):
        return f"The connection to the job server ({where}) was lost while the job ran."
    if isinstance(exc, OSError):
        return f"No job server reachable at {where} ({exc.strerror or exc})."
    return f"Something went wrong: {type(exc).__name__}: {exc}"


def result_view(result: bytes) -> dict[str, Any]:
    """A job result as the page shows it: text when it is text, else its size."""
    try:
        text = result.decode("utf-8")
    except UnicodeDecodeError:
        return {"text": None, "bytes": len(result), "binary": True}
    cut = len(text) > MAX_RESULT_CHARS
    return {"text": text[:MAX_RESULT_CHARS] + ("…" if cut else ""), "bytes": len(result), "binary": False}


async def run_photo(gateway: Gateway, hub: Hub, store: PhotoStore, session: str, photo: Photo, image: bytes) -> None:
    """Resize one uploaded photo, publishing its progress and then its copies."""
    from ..resize import pack_request, unpack_result

    def publish() -> None:
        hub.publish(session, "photo", photo.view())

    def on_progress(p: Any) -> None:
        if p.kind == "status" and p.denominator:
            photo.state, photo.numerator, photo.denominator = "resizing", p.numerator, p.denominator
            publish()

    started = time.monotonic()
    try:
        client = await gateway.client()
        result = await client.submit("resize", pack_request(image), timeout=PHOTO_TIMEOUT, on_progress=on_progress)
        photo.copies = unpack_result(result)
        photo.state = "done"
        store.trim()
    except asyncio.CancelledError:
        raise
    except Exception as e:
        photo.state, photo.error = "failed", explain(e, gateway.servers)
    log.info("web.photo.done", photo=photo.id, outcome=photo.state, copies=len(photo.copies),
             duration=round(time.monotonic() - started, 3), error=photo.error)
    publish()


@dataclass
class JobRow:
    """One submission from the Jobs form, as the page shows it."""

    id: str
    batch: str
    index: int
    function: str
    background: bool
    priority: Priority
    state: str = "submitted"  # submitted -> running -> done | failed; background: queued/running/finished
    handle: str | None = None
    numerator: int = 0
    denominator: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    messages: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    duration: float | None = None

    def view(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "id", "batch", "index", "function", "background", "priority", "state", "handle",
            "numerator", "denominator", "result", "error", "messages", "duration")}

    def finish(self, state: str) -> None:
        self.state = state
        self.duration = round(time.monotonic() - self.started, 3)


async def run_job(gateway: Gateway, hub: Hub, session: str, row: JobRow, payload: bytes) -> None:
    """Submit one job from the form and publish what happens to it."""

    def publish() -> None:
        hub.publish(session, "job", row.view())

    def on_progress(p: Any) -> None:
        row.state = "running"
        if p.kind == "status":
            row.numerator, row.denominator = p.numerator, p.denominator
        elif p.kind == "warning" and p.data:
            row.messages.append(bytes(p.data).decode("utf-8", "replace")[:500])
        publish()

    publish()
    try:
        client = await gateway.client()
        if row.background:
            handle = await client.submit_background(row.function, payload, priority=row.priority)
            row.handle, row.state = handle.decode("utf-8", "replace"), "queued"
            publish()
            await _watch_background(client, hub, session, row, handle, gateway.servers)
            return
        result = await client.submit(row.function, payload, priority=row.priority,
                                     on_progress=on_progress)
        row.result = result_view(bytes(result))
        row.finish("done")
    except asyncio.CancelledError:
        raise
    except Exception as e:
        row.error = explain(e, gateway.servers)
        # Our worker sends its failure text as a WORK_WARNING first: don't show it twice.
        row.messages = [m for m in row.messages if m not in row.error]
        row.finish("failed")
    log.info("web.job.done", function=row.function, job=row.id, outcome=row.state, duration=row.duration)
    publish()


async def _watch_background(client: Client, hub: Hub, session: str, row: JobRow, handle: bytes,
                            servers: Sequence[str]) -> None:
    """Ask for a background job's status until the server forgets it (it ended)."""
    deadline = time.monotonic() + BACKGROUND_WATCH
    while time.monotonic() < deadline:
        await asyncio.sleep(BACKGROUND_POLL)
        try:
            status = await client.status(handle)
        except Exception as e:
            row.error = explain(e, servers)
            hub.publish(session, "job", row.view())
            continue
        row.error = None
        if not status.known:
            # Gearman keeps no result for background jobs: "no longer known" is all we learn.
            row.finish("finished")
            hub.publish(session, "job", row.view())
            return
        state = "running" if status.running else "queued"
        changed = (state, status.numerator, status.denominator) != (row.state, row.numerator, row.denominator)
        row.state, row.numerator, row.denominator = state, status.numerator, status.denominator
        if changed:
            hub.publish(session, "job", row.view())
