"""Server-sent events: a per-page backlog of events, replayed on reconnect.

Every browser page opens one ``EventSource`` with a random session id.  Jobs
started by that page publish their state here; the page renders whatever
arrives.  Events are numbered so that a reconnecting ``EventSource`` (which
sends ``Last-Event-ID`` by itself) gets what it missed, and so that events
published before the page's stream was open (an upload answered quickly) are
not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

#: Session ids come from the browser: accept only short tokens.
SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
#: How many events a page can miss and still catch up.
BACKLOG = 1000
#: Sessions nobody listened to for this long are forgotten.
SESSION_TTL = 3600.0
#: A comment line this often keeps proxies from closing an idle stream.
HEARTBEAT = 15.0


def format_event(event: str, data: Any, event_id: int | None = None) -> str:
    """One SSE message; ``data`` is sent as a single line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass
class _Session:
    backlog: deque[tuple[int, str, Any]] = field(default_factory=lambda: deque(maxlen=BACKLOG))
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    listeners: int = 0
    touched: float = field(default_factory=time.monotonic)


class Hub:
    """Publish events to one page; stream them to its ``EventSource``."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._next_id = 1
        self._closed = asyncio.Event()

    def publish(self, session: str, event: str, data: Any) -> None:
        """Queue ``event`` for ``session`` and wake its streams (never blocks)."""
        s = self._session(session)
        s.backlog.append((self._next_id, event, data))
        s.touched = time.monotonic()
        self._next_id += 1
        s.changed.set()
        # A fresh Event per wake-up: listeners that were waiting see the set one.
        s.changed = asyncio.Event()

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

    async def stream(self, session: str, last_id: int = 0) -> AsyncIterator[str]:
        """SSE text for ``session``: the backlog after ``last_id``, then new events as they come."""
        s = self._session(session)
        s.listeners += 1
        try:
            yield "retry: 1000\n\n"
            while True:
                for event_id, event, data in list(s.backlog):
                    if event_id > last_id:
                        last_id = event_id
                        yield format_event(event, data, event_id)
                if self._closed.is_set():
                    return
                if not await self._wait(s.changed, HEARTBEAT):
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

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if not s.listeners and now - s.touched > SESSION_TTL]:
            del self._sessions[key]
