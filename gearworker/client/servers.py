"""The job servers of one client: which one a job goes to, and asking all of them an admin question.

A job with a unique id always goes to the same server while every server is
up (rendezvous hashing of the id over the server list), so gearmand can
coalesce duplicates even with several servers; jobs without one are spread
round robin.  A server that failed to answer is known as down to every
client of the process (:mod:`.health`): tried last, left out of admin
queries, until it answers again.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Sequence

from ..errors import ConnectionLost, NoServerAvailable
from ..transport import Endpoint, StreamOptions
from .admin import admin_query
from .health import ServerHealth, server_health
from .routing import ServerConnection

__all__ = ["ServerSet", "score"]


def score(address: str, unique: bytes) -> int:
    """The rendezvous weight of ``address`` for ``unique``: the highest takes the job.

    A stable hash (Python's ``hash()`` is salted per process): every process
    with the same server list sends a unique id to the same server.
    """
    return int.from_bytes(hashlib.blake2b(unique, key=address.encode()[:64], digest_size=8).digest(), "big")


class ServerSet:
    """A client's connections, one per server, and the order in which a job tries them."""

    def __init__(self, addresses: Sequence[str], options: StreamOptions) -> None:
        self.all = [ServerConnection(Endpoint(a, options)) for a in addresses]
        self._by_address = {s.address: s for s in self.all}
        self._round_robin = itertools.count()
        self._health: ServerHealth | None = None  # the loop's, on first use

    @property
    def health(self) -> ServerHealth:
        """The process's knowledge of which servers are down (this loop's :func:`server_health`)."""
        if self._health is None:
            self._health = server_health()
        return self._health

    def get(self, address: str) -> ServerConnection:
        """The connection to ``address``, one of this client's servers."""
        try:
            return self._by_address[address]
        except KeyError:
            raise ValueError(f"{address!r} is not one of this client's servers {list(self._by_address)}") from None

    def candidates(self, unique: bytes) -> list[ServerConnection]:
        """The servers a job tries, in order: its own first, those known down last."""
        servers = self.all
        if len(servers) == 1:
            return servers
        order = self.order(unique)
        health = self.health
        if health:  # a server known down is tried last (a stable sort keeps the others' order)
            order.sort(key=lambda s: health.is_down(s.address))
        return order

    def order(self, unique: bytes) -> list[ServerConnection]:
        """Every server, in the order a job with ``unique`` (or none) tries them while all are up."""
        servers = self.all
        if unique:
            return sorted(servers, key=lambda s: score(s.address, unique), reverse=True)
        start = next(self._round_robin) % len(servers)
        return servers[start:] + servers[:start]

    def close(self) -> None:
        for server in self.all:
            server.close()

    async def admin_all(self, command: str, timeout: float | None = None) -> dict[str, list[str]]:
        """``command``'s answer from each server that answers; a server that does not is marked down.

        Servers known as down are not asked (unless all are).  Raises
        :class:`NoServerAvailable` when none answers.
        """
        health = self.health
        targets = [s for s in self.all if not health.is_down(s.address)] or self.all
        results = await asyncio.gather(
            *(admin_query(s.endpoint, command, timeout=timeout) for s in targets), return_exceptions=True
        )
        answers: dict[str, list[str]] = {}
        errors: list[str] = [f"{s.address}: known down" for s in self.all if s not in targets]
        for server, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, (OSError, TimeoutError, ConnectionLost, NoServerAvailable)):
                    raise result
                why = str(result) or f"no answer to {command!r} in time ({type(result).__name__})"
                errors.append(f"{server.address}: {why}")
                health.down(server.endpoint, why)
            else:
                answers[server.address] = result
                health.up(server.address)
        if not answers:
            raise NoServerAvailable("no job server answered: " + "; ".join(errors))
        return answers
