"""What the web app does with the job servers, through the project's own client.

Kept apart from the HTTP routes so that each piece is small: :class:`Gateway`
owns the one :class:`~gearworker.client.Client` and a shared view of the
servers' ``status`` tables, :func:`explain` turns exceptions into sentences a
person can act on, and :func:`run_photo` is the background task behind an
upload.  Jobs from the Jobs form are in :mod:`gearworker.web.jobs`.

States are honest: a job or photo whose function has no worker on any server
says "waiting for a worker", not "submitted".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from ..client import Client, ServerRefused
from ..config import Settings
from ..errors import ConnectionLost, JobFailed, NoServerAvailable
from .events import Hub
from .photos import Photo
from .resizing import FUNCTION as RESIZE
from .resizing import resize_photo
from .storage import PhotoStore

log = structlog.get_logger("gearworker.web")

#: How long the servers' status table is reused before asking again, seconds.
STATUS_TTL = 0.5
#: How often a waiting job checks whether a worker has appeared, seconds.
WORKER_CHECK = 1.0


class Gateway:
    """The app's one client; connected on first use so the app starts without a server.

    The client connects as ``settings`` say (TLS, heartbeat, keepalive:
    :meth:`Client.from_settings`; None: the built-in options), with ``connect_timeout``.
    """

    def __init__(
        self, servers: Sequence[str], *, connect_timeout: float = 5.0, settings: Settings | None = None
    ) -> None:
        self.servers = list(servers)
        self.connect_timeout = connect_timeout
        self.settings = settings if settings is not None else Settings()
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self._status: tuple[float, dict[str, Any]] | None = None
        self._status_lock = asyncio.Lock()
        self._pids: dict[str, tuple[float, str | None]] = {}

    async def client(self) -> Client:
        """The connected client; raises :class:`NoServerAvailable` when no server answers."""
        async with self._lock:
            if self._client is None:
                client = Client.from_settings(self.settings, self.servers, connect_timeout=self.connect_timeout)
                await client.__aenter__()
                self._client = client
            return self._client

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                client, self._client = self._client, None
                await client.close()

    async def cached_status(self) -> dict[str, Any]:
        """:meth:`server_status`, shared by every page and waiting job for :data:`STATUS_TTL`."""
        async with self._status_lock:
            now = time.monotonic()
            if self._status is None or now - self._status[0] > STATUS_TTL:
                self._status = (now, await self.server_status())
            return self._status[1]

    async def workers_for(self, function: str) -> int | None:
        """Workers registered for ``function`` on all reachable servers; None when no server answered."""
        status = await self.cached_status()
        up = [s for s in status["servers"] if s["ok"]]
        if not up:
            return None
        return sum(int(f["workers"]) for s in up for f in s["functions"] if f["function"] == function)

    async def server_pid(self, address: str) -> str | None:
        """gearmand's process id (admin ``getpid``): a new one means the server restarted.

        Shared for :data:`STATUS_TTL` by every watched job, so a hundred background jobs cost one
        admin connection per interval, not a hundred.
        """
        now = time.monotonic()
        cached = self._pids.get(address)
        if cached is not None and now - cached[0] <= STATUS_TTL:
            return cached[1]
        try:
            client = await self.client()
            lines = await client.admin("getpid", server=address)
            pid = lines[0] if lines else None
        except Exception:
            pid = None
        self._pids[address] = (time.monotonic(), pid)
        return pid

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
            servers.append({"address": address, "ok": rows is not None, "error": error, "functions": _rows(rows or [])})
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


async def watch_for_workers(
    gateway: Gateway, function: str, pending: Callable[[], bool], waiting: Callable[[bool], None]
) -> None:
    """While ``pending()``, tell ``waiting(True/False)`` whether no server has a worker for ``function``."""
    while pending():
        with contextlib.suppress(Exception):  # no answer is not "no worker": the job's own error says more
            workers = await gateway.workers_for(function)
            if workers is not None and pending():
                waiting(workers == 0)
        await asyncio.sleep(WORKER_CHECK)


@dataclass
class PhotoContext:
    """What a photo's task needs besides the photo."""

    gateway: Gateway
    hub: Hub
    store: PhotoStore
    mode: str = "bytes"
    timeout: float = 300.0


async def run_photo(ctx: PhotoContext, photo: Photo, image: bytes | None) -> None:
    """Resize one stored photo, broadcasting its progress and then its copies (``image``: None reads the file)."""

    def publish() -> None:
        ctx.hub.broadcast("photo", photo.view())

    def on_progress(p: Any) -> None:
        if p.kind == "status" and p.denominator:
            photo.state, photo.numerator, photo.denominator = "resizing", p.numerator, p.denominator
            publish()

    def waiting(none: bool) -> None:
        state = "waiting" if none else "queued"
        if photo.state in ("queued", "waiting") and photo.state != state:
            photo.state = state
            publish()

    started = time.monotonic()
    watcher = asyncio.ensure_future(
        watch_for_workers(ctx.gateway, RESIZE, lambda: photo.state in ("queued", "waiting"), waiting)
    )
    try:
        client = await ctx.gateway.client()
        photo.copies = await resize_photo(
            client, ctx.store, photo, image, mode=ctx.mode, timeout=ctx.timeout, on_progress=on_progress
        )
        photo.state = "done"
    except asyncio.CancelledError:
        raise
    except Exception as e:
        photo.state, photo.error = "failed", explain(e, ctx.gateway.servers)
    finally:
        watcher.cancel()
    with contextlib.suppress(OSError, ValueError):  # deleted meanwhile: nothing to save
        if ctx.store.get(photo.id) is photo:
            await asyncio.to_thread(ctx.store.save, photo)
    log.info(
        "web.photo.done",
        photo=photo.id,
        outcome=photo.state,
        copies=len(photo.copies),
        format=photo.format,
        duration=round(time.monotonic() - started, 3),
        error=photo.error,
    )
    publish()
    for dropped in ctx.store.trim():
        ctx.hub.broadcast("photo-deleted", {"id": dropped})
