"""The asyncio Gearman client: foreground and background jobs, progress, status, admin.

::

    async with Client(["127.0.0.1:4730"]) as client:
        result = await client.submit("resize", photo_bytes, priority="high")
        handle = await client.submit_background("thumbnail", {"id": 7}, unique="photo-7")
        print(await client.status(handle))

All jobs share one connection per server (see :mod:`gearworker.client.routing`);
which server a job goes to, and which are known down, is :mod:`.servers`'.
When a server cannot be reached the next one is tried (:mod:`.failover`); a server
that dies fails the jobs it was running at once with :class:`~gearworker.errors.ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal

from ..address import parse_address
from ..config import Settings, active
from ..errors import ConnectionLost, JobTimeout, LocalProtocolError, ServerRefused
from ..payload import to_bytes
from ..protocol import PacketType, StatusRow, WorkerRow, encode_request
from ..transport import StreamOptions
from . import failover
from .admin import admin_query
from .results import JobStatus, Progress, Result
from .routing import Router, ServerConnection, Waiter
from .running import RunningJob
from .servers import ServerSet

__all__ = [
    "Client",
    "Handle",
    "JobStatus",
    "Payload",
    "Priority",
    "Progress",
    "Result",
    "RunningJob",
    "ServerRefused",
    "default_client",
    "encode_payload",
    "submit",
    "submit_background",
]

_T = PacketType
Priority = Literal["high", "normal", "low"]
Payload = bytes | bytearray | memoryview | str | dict[str, Any] | list[Any] | None
ProgressCallback = Callable[[Progress], object]

#: Longest unique id sent: gearmand 1.1.20 answers ERROR above 64 bytes and, at exactly
#: 64, truncates the id to 63 and prepends a NUL to the workload the worker gets.
MAX_UNIQUE_SIZE = 63

_FOREGROUND = {"normal": _T.SUBMIT_JOB, "high": _T.SUBMIT_JOB_HIGH, "low": _T.SUBMIT_JOB_LOW}
_BACKGROUND = {"normal": _T.SUBMIT_JOB_BG, "high": _T.SUBMIT_JOB_HIGH_BG, "low": _T.SUBMIT_JOB_LOW_BG}


class Handle(bytes):
    """A background job's handle (bytes), remembering the server that holds the job."""

    server: str

    def __new__(cls, value: bytes, server: str = "") -> Handle:
        self = super().__new__(cls, value)
        self.server = server
        return self


def encode_payload(payload: Payload) -> bytes:
    """bytes-like as they are, ``str`` as UTF-8, dict/list as compact JSON, None as empty."""
    if payload is not None and not isinstance(payload, (bytes, bytearray, memoryview, str, dict, list)):
        raise TypeError(f"payload must be bytes, str, dict or list, not {type(payload).__name__}")
    return to_bytes(payload)  # the same encoding as a handler's return value


def _unique(unique: str | bytes | None) -> bytes:
    if unique is None:
        return b""
    return unique.encode() if isinstance(unique, str) else bytes(unique)


def _checked_unique(unique: str | bytes | None, limit: int) -> bytes:
    uid = _unique(unique)
    if len(uid) > limit:
        raise LocalProtocolError(
            f"unique id of {len(uid)} bytes is longer than {limit}: gearmand 1.1.20 refuses more "
            "than 64 and silently corrupts the workload at exactly 64 (hash long ids, e.g. with hashlib)"
        )
    return uid


def _background_type(priority: str, when: datetime | None) -> tuple[PacketType, tuple[bytes, ...]]:
    """The submit packet of a background job, and the extra argument of a scheduled one (its epoch)."""
    if when is None:
        return _BACKGROUND[_priority(priority)], ()
    if _priority(priority) != "normal":
        raise ValueError("gearmand has no priority for scheduled jobs (when=): use priority='normal'")
    return _T.SUBMIT_JOB_EPOCH, (str(int(when.timestamp())).encode(),)


class Client:
    """A Gearman client sharing one connection per job server among all its jobs.

    ``servers`` are ``"host:port"`` strings; ``None`` takes them from the
    settings (``settings.py`` / ``GEARWORKER_SERVERS``; inside a worker, the
    worker's own settings, its command-line flags included), else the local gearmand
    that ``gearworker run`` starts (127.0.0.1:``local_gearmand_port``, 4730).
    The connection options (TLS, heartbeat, TCP keepalive, timeouts...) come
    from the same settings when ``servers`` is None; with ``servers`` given
    nothing is read from the settings and the options not passed here keep
    their built-in defaults (:meth:`from_settings` applies a Settings object's).
    Unique ids longer than ``max_unique_size`` (63, gearmand's safe limit)
    raise :class:`~gearworker.errors.LocalProtocolError` before anything is sent.
    Connections open on first use.  Use ``async with Client(...)`` or call
    :meth:`close`.  A client belongs to the event loop it is first used on.
    """

    def __init__(
        self,
        servers: Sequence[str] | None = None,
        *,
        connect_timeout: float | None = None,
        reconnect_min: float | None = None,
        reconnect_max: float | None = None,
        max_packet_size: int | None = None,
        max_unique_size: int = MAX_UNIQUE_SIZE,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
        tls: ssl.SSLContext | None = None,
        tls_server_hostname: str | None = None,
    ) -> None:
        self._setup(
            active() if servers is None else Settings(),
            servers,
            max_unique_size,
            connect_timeout=connect_timeout,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
            max_packet_size=max_packet_size,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            ssl=tls,
            server_hostname=tls_server_hostname,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        servers: Sequence[str] | None = None,
        *,
        connect_timeout: float | None = None,
        reconnect_min: float | None = None,
        reconnect_max: float | None = None,
        max_packet_size: int | None = None,
        max_unique_size: int = MAX_UNIQUE_SIZE,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
        tls: ssl.SSLContext | None = None,
        tls_server_hostname: str | None = None,
    ) -> Client:
        """A client whose connections use ``settings``' connection options, for any ``servers``.

        Its connections open as the worker's own do, with ``settings``' TLS
        (``tls``, ``tls_ca_file``, ``tls_cert_file``, ``tls_key_file``,
        ``tls_server_hostname``), heartbeat, TCP keepalive,
        ``connect_timeout``, reconnect delays and ``max_packet_size``; its
        admin queries (``status``, ``workers``...) use the same TLS and timeout.
        ``servers`` None: ``settings.servers``, else the local gearmand
        (127.0.0.1:``local_gearmand_port``).  A keyword argument given (not
        None) replaces the setting of the same meaning, as for :class:`Client`.
        The TLS files are read here: a missing or bad one raises
        :class:`~gearworker.errors.ConfigError` naming the setting::

            settings = gearworker.config.load()  # settings.py, then GEARWORKER_* variables
            async with Client.from_settings(settings, ["gm1:4730"]) as client:
                ...
        """
        client = cls.__new__(cls)
        client._setup(
            settings,
            servers,
            max_unique_size,
            connect_timeout=connect_timeout,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
            max_packet_size=max_packet_size,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            ssl=tls,
            server_hostname=tls_server_hostname,
        )
        return client

    def _setup(self, settings: Settings, servers: Sequence[str] | None, max_unique_size: int, **overrides: Any) -> None:
        """Servers and options from ``settings`` (its servers only when ``servers`` is None), then ``overrides``."""
        self.max_unique_size = max_unique_size
        addresses = list(servers) if servers is not None else list(settings.servers)
        if not addresses:  # where `gearworker run` starts its local gearmand when no server is set
            addresses = [f"127.0.0.1:{settings.local_gearmand_port}"]
        for address in addresses:
            parse_address(address)  # a typo fails here, not at the first submit
        options = _options(settings, **overrides)
        self.connect_timeout = options.connect_timeout
        self._servers = ServerSet(addresses, options)
        self._closed = False

    @property
    def servers(self) -> list[ServerConnection]:
        """One connection per job server, in the order they were given."""
        return self._servers.all

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; jobs still waiting fail with ConnectionLost."""
        self._closed = True
        self._servers.close()

    # -- jobs -------------------------------------------------------------

    async def submit(
        self,
        function: str,
        payload: Payload = b"",
        *,
        priority: Priority = "normal",
        unique: str | bytes | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Result:
        """Run a foreground job and return its result.

        ``on_progress`` gets each :class:`Progress` (WORK_STATUS/DATA/WARNING)
        as it arrives; it may be a plain or an async function (async ones run
        as tasks, so they never hold up routing).  Raises
        :class:`~gearworker.errors.JobFailed` / :class:`~gearworker.errors.JobException`
        (with the worker's message), :class:`~gearworker.errors.JobTimeout`
        (a ``TimeoutError``) after ``timeout`` seconds,
        :class:`~gearworker.errors.NoServerAvailable` when no server can be
        reached and :class:`~gearworker.errors.ConnectionLost` when the server
        dies first.  On timeout or cancellation the job is forgotten by this
        client but keeps running on the worker (Gearman cannot cancel it).
        """
        waiter = Waiter(_T.JOB_CREATED, function, background=False, sink=on_progress)
        ptype = _FOREGROUND[_priority(priority)]
        if timeout is None:  # the common case: no timeout context
            return await _wait(await self._send(ptype, function, payload, unique, waiter), waiter)
        try:
            async with asyncio.timeout(timeout):
                return await _wait(await self._send(ptype, function, payload, unique, waiter), waiter)
        except TimeoutError as e:
            if waiter.future.done() and not waiter.future.cancelled():
                raise  # a TimeoutError from elsewhere, not ours
            raise JobTimeout(f"job {function!r} did not finish within {timeout}s") from e

    def start(
        self,
        function: str,
        payload: Payload = b"",
        *,
        priority: Priority = "normal",
        unique: str | bytes | None = None,
        timeout: float | None = None,
    ) -> RunningJob:
        """A foreground job whose progress is read with ``async for``::

        async with client.start("resize", data) as job:
            async for event in job:          # Progress, until the job ends
                print(event.kind, event.fraction)
            result = await job.result()      # or raises like submit()
        """
        return RunningJob(
            lambda waiter: self._send(_FOREGROUND[_priority(priority)], function, payload, unique, waiter),
            function,
            timeout,
        )

    async def submit_background(
        self,
        function: str,
        payload: Payload = b"",
        *,
        priority: Priority = "normal",
        unique: str | bytes | None = None,
        when: datetime | None = None,
        answer_timeout: float | None = None,
    ) -> Handle:
        """Queue a background job and return its handle as soon as the server has it.

        ``when`` schedules it (SUBMIT_JOB_EPOCH; a naive datetime is local
        time); gearmand has no priority for scheduled jobs, so ``priority``
        must then be "normal".

        When the server's connection is lost before it answered (it died, or
        was declared dead by the heartbeat), a job **with** a ``unique`` id is
        submitted again to the next server: the first one may have queued it,
        so it may run twice, which idempotent handlers keyed by the unique id
        absorb (and one server coalesces the two).  A job without one raises
        :class:`~gearworker.errors.ConnectionLost` saying why it was not retried.

        ``answer_timeout``: seconds to wait for each server's JOB_CREATED.  A
        server silent that long is marked down for the whole process and the
        job goes to the next one, as for a lost connection (unique id only);
        the silent server may still queue it when it resumes.  The scheduler
        uses it: a hung server must not hold a tick.
        """
        ptype, extra = _background_type(priority, when)
        uid = _unique(unique)
        handle, server = await failover.background(
            self._servers,
            lambda waiter, tried: self._send(ptype, function, payload, unique, waiter, *extra, skip=tried),
            function,
            uid,
            answer_timeout,
            lambda: self._closed,
        )
        return Handle(handle, server)

    async def _send(
        self,
        ptype: PacketType,
        function: str,
        payload: Payload,
        unique: str | bytes | None,
        waiter: Waiter,
        *extra: bytes,
        skip: Sequence[str] = (),
    ) -> Router:
        if self._closed:
            raise ConnectionLost("client is closed")
        uid = _checked_unique(unique, self.max_unique_size)
        data = encode_request(ptype, function.encode(), uid, *extra, encode_payload(payload))
        return await failover.send(self._servers, data, uid, waiter, skip)

    def server_for(self, unique: str | bytes) -> str:
        """The server a job with this unique id goes to while every server is up."""
        return self._servers.order(_unique(unique) or b"\x00")[0].address

    # -- status -----------------------------------------------------------

    async def status(self, handle: bytes, *, server: str | None = None) -> JobStatus:
        """GET_STATUS of a job handle, asked of the server that holds it.

        The server comes from ``server=``, else from a :class:`Handle`
        returned by :meth:`submit_background`; for plain bytes every server is
        asked and the first that knows the job answers.
        """
        return await failover.status(self._servers, handle, server)

    async def status_unique(self, unique: str | bytes, *, server: str | None = None) -> JobStatus:
        """GET_STATUS_UNIQUE: status of the job with this unique id (with ``waiting`` clients)."""
        return await failover.status_unique(self._servers, _unique(unique), server)

    # -- admin ------------------------------------------------------------

    async def server_status(self, *, timeout: float | None = None) -> dict[str, list[StatusRow]]:
        """The ``status`` admin table of each server that answers, keyed by "host:port".

        Servers known as down are not asked (unless all are); one that does not
        answer within ``timeout`` (default: the connect timeout) is marked down.
        """
        answers = await self._servers.admin_all("status", timeout)
        return {a: [StatusRow.parse(line) for line in lines] for a, lines in answers.items()}

    async def workers(self, *, timeout: float | None = None) -> dict[str, list[WorkerRow]]:
        """The ``workers`` admin table (every connection, workers and clients) of each server that answers
        (as :meth:`server_status`)."""
        answers = await self._servers.admin_all("workers", timeout)
        return {a: [WorkerRow.parse(line) for line in lines] for a, lines in answers.items()}

    async def admin(self, command: str, *, server: str | None = None) -> list[str]:
        """Send one text admin command (e.g. ``"version"``) to one server; return the answer's lines."""
        target = self._servers.get(server) if server else self._servers.all[0]
        return await admin_query(target.endpoint, command)


def _options(settings: Settings, **overrides: Any) -> StreamOptions:
    """The settings' stream options, with the keyword arguments given to :class:`Client` (None: the setting's)."""
    return dataclasses.replace(
        StreamOptions.from_settings(settings), **{k: v for k, v in overrides.items() if v is not None}
    )


async def _wait(router: Router, waiter: Waiter) -> Result:
    try:
        result: Result = await waiter.future
        return result
    finally:
        if waiter.future.cancelled() or not waiter.future.done():
            router.forget(waiter)  # the caller stopped waiting: leave the other jobs be


def _priority(priority: str) -> str:
    if priority not in _FOREGROUND:
        raise ValueError(f"priority must be 'high', 'normal' or 'low', not {priority!r}")
    return priority


# -- module-level helpers -----------------------------------------------------

_default_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = weakref.WeakKeyDictionary()


def default_client() -> Client:
    """The shared client of the running event loop, built from the settings on first use."""
    loop = asyncio.get_running_loop()
    client = _default_clients.get(loop)
    if client is None or client._closed:
        client = _default_clients[loop] = Client()
    return client


async def submit(function: str, payload: Payload = b"", **options: Any) -> Result:
    """``Client.submit`` on :func:`default_client` (in a handler, the worker's servers; else the settings')."""
    return await default_client().submit(function, payload, **options)


async def submit_background(function: str, payload: Payload = b"", **options: Any) -> Handle:
    """``Client.submit_background`` on :func:`default_client`."""
    return await default_client().submit_background(function, payload, **options)
