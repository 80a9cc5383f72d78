"""The web app's state, shared by its pages and routes: :class:`WebApp`, its :class:`WebOptions`, its limits."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette

from ..config import Settings
from ..errors import ConfigError
from .events import Hub
from .jobs import JobBook, JobContext
from .login import Logins, check_hash_format
from .security import RateLimit
from .service import Gateway, PhotoContext, run_photo
from .storage import PhotoStore

__all__ = [
    "LOGIN_ATTEMPTS",
    "MAX_COPIES",
    "MAX_PAYLOAD",
    "MULTIPART_OVERHEAD",
    "PRIORITIES",
    "SERVERS_INTERVAL",
    "STATIC",
    "WebApp",
    "WebOptions",
]

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
#: Wrong passwords one client may try per minute; the next waits (429).
LOGIN_ATTEMPTS = 10
#: How often job rows and events past their age limit are forgotten, seconds.
SWEEP_INTERVAL = 30.0


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
    #: The port ``gearworker web`` listens on; None (an app built in-process): the Host's port is not checked.
    listen_port: int | None = None
    allowed_hosts: tuple[str, ...] = ()
    rate_limit: int = 600
    job_timeout: float = 300.0
    connect_timeout: float = 5.0
    #: The settings the app's client connects with (TLS, heartbeat, keepalive:
    #: ``Client.from_settings``), with ``connect_timeout`` above; None: the built-in options.
    settings: Settings | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Any, *, listen_host: str, listen_port: int | None = None) -> WebOptions:
        """The web app's options from the settings; a bad ``web_password_hash`` is a :class:`ConfigError`."""
        if settings.web_password_hash is not None:
            problem = check_hash_format(settings.web_password_hash)  # the one place that knows the hash formats
            if problem:
                raise ConfigError(problem, file=settings.origin("web_password_hash"), setting="web_password_hash")
        return cls(
            max_upload_bytes=settings.max_upload_bytes,
            storage_root=settings.web_storage_root,
            max_photos=settings.web_max_photos,
            max_stored_bytes=settings.web_max_stored_bytes,
            photo_mode=settings.web_photo_mode,
            password_hash=settings.web_password_hash,
            listen_host=listen_host,
            listen_port=listen_port,
            allowed_hosts=tuple(settings.web_allowed_hosts),
            rate_limit=settings.web_rate_limit,
            job_timeout=settings.web_job_timeout,
            connect_timeout=settings.connect_timeout,
            settings=settings,
        )


def _give_back_free_memory() -> None:
    """Return the heap freed by forgotten rows and events to the system (glibc's ``malloc_trim``).

    Results of a few KB are allocated by malloc, not by Python's small-object allocator, and glibc
    keeps what is freed for later unless asked; elsewhere this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class WebApp:
    """The app's state: its client, event hub, photos, jobs, rate limits and background tasks."""

    def __init__(self, servers: Sequence[str], options: WebOptions) -> None:
        self.options = options
        self.max_upload_bytes = options.max_upload_bytes
        self.gateway = Gateway(servers, connect_timeout=options.connect_timeout, settings=options.settings)
        self.hub = Hub()
        self.photos = PhotoStore(
            options.storage_root, max_photos=options.max_photos, max_bytes=options.max_stored_bytes
        )
        self.photo_ctx = PhotoContext(self.gateway, self.hub, self.photos, options.photo_mode, options.job_timeout)
        self.job_ctx = JobContext(self.gateway, self.hub, options.job_timeout)
        self.jobs = JobBook()
        self.rate = RateLimit(options.rate_limit)
        self.login_rate = RateLimit(LOGIN_ATTEMPTS)
        self.logins = Logins(options.storage_root)
        self._logins_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self._batches = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def save_logins(self) -> None:
        """Write the record of live logins after a login or logout (one write at a time, newest last)."""
        async with self._logins_lock:
            await asyncio.to_thread(self.logins.save, self.logins.snapshot())

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
        # Not one of self.tasks (the photos and jobs running, which a caller may wait for): it never ends.
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
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
        for task in [*self.tasks, *([self._sweeper] if self._sweeper else [])]:
            task.cancel()
        await asyncio.gather(*self.tasks, *([self._sweeper] if self._sweeper else []), return_exceptions=True)
        await self.gateway.close()

    async def _sweep(self) -> None:
        """Forget, now and then, the job rows and events past their age limit, even when nothing else happens."""
        while not await self.hub.sleep(SWEEP_INTERVAL):
            kept = self.hub.events + len(self.jobs)
            self.hub.trim()
            self.jobs.trim()
            if self.hub.events + len(self.jobs) < kept:
                _give_back_free_memory()

    def end_streams(self) -> None:
        """End the live streams (from a signal handler): uvicorn waits for open responses before it stops."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.hub.close)

    # -- pages and settings -------------------------------------------------
