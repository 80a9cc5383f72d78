"""Server choice and failover for a :class:`~gearworker.client.Client`'s requests.

A packet goes to the first server of the job's order (:mod:`.servers`) that
can be reached; a background job with a unique id whose server is lost (or
silent past ``answer_timeout``) before JOB_CREATED is submitted again to the
next one; a status question goes to the server that holds the job, else to
each server in turn.  :mod:`.api` builds the packets and keeps the public API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from ..errors import ConnectionLost, NoServerAvailable
from ..payload import to_int
from ..protocol import PacketType, encode_request
from .results import JobStatus
from .routing import Router, ServerConnection, Waiter
from .servers import ServerSet

__all__ = ["background", "send", "status", "status_unique"]

log = structlog.get_logger("gearworker.client")
_T = PacketType


async def send(servers: ServerSet, data: bytes, uid: bytes, waiter: Waiter, skip: Sequence[str] = ()) -> Router:
    """Queue ``data`` for ``waiter`` on the first server of ``uid``'s order that can be reached, not in ``skip``."""
    errors: list[str] = []
    for server in servers.candidates(uid):
        if server.address in skip:
            continue
        try:
            router = server.router or await server.get()  # connected: skip a coroutine per job
            stream = router.stream
            if stream is not None and stream.paused:  # back-pressure before queuing more, not after
                await stream.writable()
            router.send(data, waiter)
            return router
        except (NoServerAvailable, ConnectionLost) as e:
            errors.append(str(e))
    raise NoServerAvailable("no job server reachable: " + "; ".join(errors))


async def background(
    servers: ServerSet,
    send: Callable[[Waiter, Sequence[str]], Awaitable[Router]],
    function: str,
    uid: bytes,
    answer_timeout: float | None,
    closed: Callable[[], bool],
) -> tuple[bytes, str]:
    """A background job's handle and server: ``send`` submits it, to the next server when one is lost first.

    ``send(waiter, skip)`` queues the submit on a server not in ``skip``;
    see :meth:`Client.submit_background <gearworker.client.Client.submit_background>`.
    """
    tried: list[str] = []
    while True:
        waiter = Waiter(_T.JOB_CREATED, function)
        router = await send(waiter, tried)
        try:
            if answer_timeout is None:
                handle: bytes = await waiter.future
            else:
                handle = await _created_within(servers, router, waiter, answer_timeout)
        except ConnectionLost as e:
            tried.append(waiter.address)
            if closed():
                raise
            _may_resubmit(e, function, uid, tried, len(servers.all))
            continue
        return handle, waiter.address


async def _created_within(servers: ServerSet, router: Router, waiter: Waiter, seconds: float) -> bytes:
    """``waiter``'s JOB_CREATED within ``seconds``; else its server is down and ConnectionLost says so."""
    try:
        async with asyncio.timeout(seconds):
            handle: bytes = await waiter.future
            return handle
    except TimeoutError:
        router.forget(waiter)  # its JOB_CREATED may still come: its FIFO place stays
        why = f"did not answer a submit within {seconds:g}s"
        servers.health.down(servers.get(waiter.address).endpoint, why)
        raise ConnectionLost(f"job server {waiter.address} {why}") from None


def _may_resubmit(error: ConnectionLost, function: str, uid: bytes, tried: list[str], servers: int) -> None:
    """Raise unless a background submit that lost its server before JOB_CREATED may go to the next one."""
    if not uid:
        raise ConnectionLost(
            f"{error}; background job {function!r} was not submitted again: it has no unique id, and the "
            "server may have queued it before the connection was lost (pass unique= to allow a retry)"
        ) from error
    if len(tried) >= servers:
        raise ConnectionLost(
            f"{error}; background job {function!r} (unique {uid!r}) was tried on every server: {', '.join(tried)}"
        ) from error
    log.warning(
        "client.resubmit",
        function=function,
        unique=uid.decode(errors="replace"),
        server=tried[-1],
        reason=str(error),
    )


async def status(servers: ServerSet, handle: bytes, server: str | None) -> JobStatus:
    """GET_STATUS of ``handle`` from ``server`` (or the ``Handle``'s), else from each server until one knows it."""
    server = server or getattr(handle, "server", None) or None
    targets = [servers.get(server)] if server else servers.all
    errors: list[str] = []
    for target in targets:
        try:
            packet = await _ask(target, _T.GET_STATUS, _T.STATUS_RES, bytes(handle))
        except (NoServerAvailable, ConnectionLost) as e:
            if len(targets) == 1:
                raise
            errors.append(str(e))
            continue
        _, known, running, num, den = packet.args
        status = JobStatus(known == b"1", running == b"1", to_int(num), to_int(den))
        if status.known or len(targets) == 1:
            return status
    if len(errors) == len(targets):
        raise NoServerAvailable("no job server answered: " + "; ".join(errors))
    return JobStatus(False, False, 0, 0)


async def status_unique(servers: ServerSet, uid: bytes, server: str | None) -> JobStatus:
    """GET_STATUS_UNIQUE of ``uid`` from ``server``, else from each server in the id's order until one knows it."""
    targets = [servers.get(server)] if server else servers.candidates(uid)
    status = JobStatus(False, False, 0, 0, 0)
    for target in targets:
        try:
            packet = await _ask(target, _T.GET_STATUS_UNIQUE, _T.STATUS_RES_UNIQUE, uid)
        except (NoServerAvailable, ConnectionLost):
            if len(targets) == 1:
                raise
            continue
        _, known, running, num, den, waiting = packet.args
        status = JobStatus(known == b"1", running == b"1", to_int(num), to_int(den), to_int(waiting))
        if status.known:
            return status
    return status


async def _ask(server: ServerConnection, ptype: PacketType, reply: PacketType, arg: bytes) -> Any:
    router = await server.get()
    waiter = Waiter(reply)
    router.send(encode_request(ptype, arg), waiter)
    return await waiter.future
