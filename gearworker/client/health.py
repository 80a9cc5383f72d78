"""Job servers this process knows as down: shared by every client on the event loop, probed until they answer.

A server that failed to answer (a connect that failed or timed out, a
connection lost or declared dead by the heartbeat, an admin query or a
submit that got no answer in time) is marked down here, for the whole
process: every :class:`~gearworker.client.Client` on the loop (the
scheduler's, the failed-job recorder's, a handler's) tries the other servers
first and leaves it out of admin queries, instead of each waiting out its
own timeout on it.  One probe per down server asks it ``version`` over a
connection of its own and waits for the answer; the first answer marks it up
again.  A hung gearmand (SIGSTOP, a stalled host) still accepts connections
in its kernel, so "down" means "did not answer", not "refused".
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass

import structlog

from ..transport import Endpoint
from .admin import admin_query

__all__ = ["PROBE_INTERVAL", "PROBE_WAIT", "ServerHealth", "server_health"]

log = structlog.get_logger("gearworker.client")

#: Seconds a probe waits for its answer (a hung server answers when it resumes), and between probes
#: that failed (refused, or no answer in PROBE_WAIT).
PROBE_WAIT = 30.0
PROBE_INTERVAL = 1.0


@dataclass(slots=True)
class _Down:
    since: float
    reason: str
    probe: asyncio.Task[None]


class ServerHealth:
    """Which servers failed to answer; one per event loop (:func:`server_health`)."""

    def __init__(self) -> None:
        self._down: dict[str, _Down] = {}

    def __bool__(self) -> bool:
        """True while some server is down (the common case, none, costs one test)."""
        return bool(self._down)

    def is_down(self, address: str) -> bool:
        return address in self._down

    def down(self, endpoint: Endpoint, reason: str) -> None:
        """``endpoint`` did not answer: skip it from now on, and probe it until it does."""
        address = endpoint.address
        if address in self._down:
            return
        probe = asyncio.get_running_loop().create_task(self._probe(endpoint), name=f"probe {address}")
        self._down[address] = _Down(time.monotonic(), reason, probe)
        log.warning("client.server_down", server=address, reason=reason, hint="skipped until it answers again")

    def up(self, address: str) -> None:
        """``address`` answered: use it again."""
        entry = self._down.pop(address, None)
        if entry is None:
            return
        if entry.probe is not asyncio.current_task():
            entry.probe.cancel()
        log.info("client.server_up", server=address, down_for=round(time.monotonic() - entry.since, 1))

    async def _probe(self, endpoint: Endpoint) -> None:
        while True:
            try:
                await admin_query(endpoint, "version", timeout=PROBE_WAIT)
            except Exception:  # refused, reset, no answer in PROBE_WAIT: try again
                await asyncio.sleep(PROBE_INTERVAL)
                continue
            self.up(endpoint.address)
            return

    def close(self) -> None:
        """Stop every probe (tests; a process that ends stops them with its loop)."""
        for entry in self._down.values():
            entry.probe.cancel()
        self._down.clear()


_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ServerHealth] = weakref.WeakKeyDictionary()


def server_health() -> ServerHealth:
    """The running loop's :class:`ServerHealth`, shared by every client on it."""
    loop = asyncio.get_running_loop()
    health = _registries.get(loop)
    if health is None:
        health = _registries[loop] = ServerHealth()
    return health
