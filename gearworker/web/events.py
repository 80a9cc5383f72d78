"""Server-sent events: per-page and broadcast events, replayed on reconnect, restart-proof.

Every browser page opens one ``EventSource`` with a random session id.  Jobs
started by that page publish their state to its session; photos are shared
by every page (they live on disk), so their events are broadcast.

Event ids are ``<boot>-<n>``: ``boot`` is random per process start, so ids
never repeat across restarts.  Each stream begins with a ``hello`` event
naming the boot id.  A reconnecting ``EventSource`` sends its
``Last-Event-ID``: from this boot, it gets exactly what it missed; from an
older boot (the web app restarted), it gets nothing old, and the page,
seeing a new boot id in ``hello``, re-syncs its photos and jobs.

What is kept for pages to catch up on is bounded: each page keeps at most
:data:`BACKLOG` events, all pages together :data:`MAX_EVENTS`, none older
than :data:`EVENT_TTL`; the oldest go first.  A page that comes back with a
cursor older than an event dropped unsent (or whose session was forgotten)
gets ``hello`` with ``"resync": true`` and re-syncs as after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import StreamingResponse

#: Session ids come from the browser: accept only short tokens.
SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
#: How many events a page can miss and still catch up (per session, and broadcast); the oldest go first.
BACKLOG = 1000
#: Events kept for all pages together (job views with results of up to 4,000 characters); the oldest go first.
MAX_EVENTS = 5000
#: How long an event is kept for a page that is away (a hidden tab, a lost connection), seconds.
EVENT_TTL = 600.0
#: Sessions nobody listened to for this long are forgotten (their events are gone by then).
SESSION_TTL = EVENT_TTL
#: A comment line this often keeps proxies from closing an idle stream.
HEARTBEAT = 15.0
#: How soon a page's EventSource tries again after the stream ends (a restart), milliseconds.
RETRY_MS = 500

Entry = tuple[int, str, Any]

_last_revision = 0


def revision() -> int:
    """A number for a view of a photo or a job, larger than that of every view taken before it.

    A page gets views over several connections (the event stream, the photo
    list, an upload's answer), so they can arrive out of order: a list read
    while a photo was queued can land after the stream said it was done.  The
    page keeps the view with the larger revision.  Microseconds of the wall
    clock, bumped when two views fall in one microsecond, so a restarted web
    app's views are newer too (below 2**53: exact in JavaScript).
    """
    global _last_revision
    _last_revision = max(_last_revision + 1, time.time_ns() // 1000)
    return _last_revision


def format_event(event: str, data: Any, event_id: str | None = None) -> str:
    """One SSE message; ``data`` is sent as a single line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass
class _Backlog:
    """The events kept for one page (or for every page: the broadcast), oldest first."""

    #: (number, event, data, when it came)
    entries: deque[tuple[int, str, Any, float]] = field(default_factory=deque)
    #: The number of the newest event dropped from here: a page whose cursor is older missed it.
    dropped: int = 0

    def after(self, n: int) -> list[Entry]:
        return [(m, event, data) for m, event, data, _ in self.entries if m > n]

    def drop_oldest(self) -> None:
        self.dropped = max(self.dropped, self.entries.popleft()[0])


@dataclass
class _Session:
    backlog: _Backlog = field(default_factory=_Backlog)
    listeners: int = 0
    touched: float = field(default_factory=time.monotonic)


class Hub:
    """Publish events to one page or to all; stream them to each page's ``EventSource``."""

    def __init__(self, boot: str | None = None) -> None:
        #: Changes at every start of the web app: ids with another prefix are from an older process.
        self.boot = boot or secrets.token_hex(4)
        self._sessions: dict[str, _Session] = {}
        self._broadcast = _Backlog()
        #: Every event kept: (when it came, its number, its session or None for the broadcast), oldest first.
        self._order: deque[tuple[float, int, str | None]] = deque()
        self._kept = 0
        self._next = 1
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()

    def new_id(self, prefix: str) -> str:
        """An id unique across restarts, e.g. for a job row: ``<boot>-<prefix><n>``."""
        n, self._next = self._next, self._next + 1
        return f"{self.boot}-{prefix}{n}"

    def publish(self, session: str, event: str, data: Any) -> None:
        """Queue ``event`` for ``session`` and wake its streams (never blocks)."""
        s = self._session(session)
        self._keep(session, s.backlog, event, data)
        s.touched = time.monotonic()
        self._wake()

    def broadcast(self, event: str, data: Any) -> None:
        """Queue ``event`` for every page, open now or later in this boot."""
        self._keep(None, self._broadcast, event, data)
        self._wake()

    @property
    def events(self) -> int:
        """How many events are kept for pages to catch up on, all pages together."""
        return self._kept

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def _keep(self, owner: str | None, backlog: _Backlog, event: str, data: Any) -> None:
        n, now = self._take(), time.monotonic()
        backlog.entries.append((n, event, data, now))
        self._order.append((now, n, owner))
        self._kept += 1
        if len(backlog.entries) > BACKLOG:
            backlog.drop_oldest()
            self._kept -= 1
        if len(self._order) > 2 * max(self._kept, BACKLOG):
            self._compact()
        self.trim(forget_sessions=False)

    def _compact(self) -> None:
        """Build ``_order`` again from the backlogs: the places of events dropped per page are gone."""
        owned: list[tuple[str | None, _Backlog]] = [(None, self._broadcast)]
        owned += [(k, s.backlog) for k, s in self._sessions.items()]
        self._order = deque(heapq.merge(*([(at, n, owner) for n, _, _, at in b.entries] for owner, b in owned)))

    def trim(self, *, now: float | None = None, forget_sessions: bool = True) -> None:
        """Drop events past :data:`MAX_EVENTS` or older than :data:`EVENT_TTL`, and forget idle sessions.

        Each backlog is in the order of ``_order``, so the oldest event kept anywhere is the first of its
        own backlog, unless that one dropped it already (past :data:`BACKLOG`, or a forgotten session).
        """
        now = time.monotonic() if now is None else now
        while self._order and (self._kept > MAX_EVENTS or now - self._order[0][0] > EVENT_TTL):
            _, n, owner = self._order.popleft()
            session = self._sessions.get(owner) if owner is not None else None
            backlog = self._broadcast if owner is None else session.backlog if session is not None else None
            if backlog is not None and backlog.entries and backlog.entries[0][0] == n:
                backlog.drop_oldest()
                self._kept -= 1
        if forget_sessions:
            self._forget_idle(now)

    def _take(self) -> int:
        n, self._next = self._next, self._next + 1
        return n

    def _wake(self) -> None:
        # A fresh Event per wake-up: listeners that were waiting see the set one.
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed.is_set()

    def close(self) -> None:
        """End every stream (the server is shutting down)."""
        self._closed.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until :meth:`close`; True when closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)
        return self._closed.is_set()

    def cursor(self, last_event_id: str) -> int | None:
        """The event number after which to replay, or None for "nothing old" (new page, or older boot)."""
        boot, _, n = last_event_id.rpartition("-")
        return int(n) if boot == self.boot and n.isdigit() else None

    async def stream(self, session: str, last_event_id: str = "") -> AsyncGenerator[str, None]:
        """SSE text for ``session``: ``hello``, what it missed, then new events as they come."""
        cursor = self.cursor(last_event_id)
        # A page of this boot whose session was forgotten (away past the age limit) missed its events.
        forgotten = cursor is not None and session not in self._sessions
        s = self._session(session)
        s.listeners += 1
        # Broadcast events from before this page knew us are in the photo list it loads instead.
        shared_after = cursor if cursor is not None else self._next - 1
        own_after = cursor or 0
        try:
            yield f"retry: {RETRY_MS}\n\n"
            yield format_event("hello", {"boot": self.boot})
            while True:
                # Take the wake-up event before reading the backlogs: a publish while this generator
                # waits at a yield below sets this one, so the wait at the end returns at once.  Read
                # after the yields, it would be the next, unset one, and the stream would sleep until
                # the heartbeat with that event unsent.
                changed = self._changed
                if forgotten or s.backlog.dropped > own_after or self._broadcast.dropped > shared_after:
                    # Events this page never got are gone: it fetches its views again, then goes on from here.
                    forgotten = False
                    own_after, shared_after = (
                        max(own_after, s.backlog.dropped),
                        max(shared_after, self._broadcast.dropped),
                    )
                    yield format_event("hello", {"boot": self.boot, "resync": True})
                fresh = sorted(s.backlog.after(own_after) + self._broadcast.after(shared_after))
                for n, event, data in fresh:
                    own_after = shared_after = max(shared_after, n)
                    yield format_event(event, data, f"{self.boot}-{n}")
                if self._closed.is_set():
                    return
                if not await self._wait(changed, HEARTBEAT):
                    yield ": keep-alive\n\n"
        finally:
            s.listeners -= 1
            s.touched = time.monotonic()

    async def _wait(self, changed: asyncio.Event, timeout: float) -> bool:
        closed = asyncio.ensure_future(self._closed.wait())
        woken = asyncio.ensure_future(changed.wait())
        try:
            done, _ = await asyncio.wait({closed, woken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            woken.cancel()
        return bool(done)

    def _session(self, session: str) -> _Session:
        s = self._sessions.get(session)
        if s is None:
            self._forget_idle()
            s = self._sessions[session] = _Session()
        return s

    def _forget_idle(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in [k for k, s in self._sessions.items() if not s.listeners and now - s.touched > SESSION_TTL]:
            self._kept -= len(self._sessions.pop(key).backlog.entries)  # their places in _order are skipped


async def merge(*streams: AsyncIterator[str]) -> AsyncIterator[str]:
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


def sse(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )
