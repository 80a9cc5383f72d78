"""Gearman's text admin protocol (``status``, ``workers``...) over a short-lived connection.

Admin queries are rare, so each opens its own connection instead of sharing
(and risking the state of) the binary connection that carries jobs.
"""

from __future__ import annotations

import asyncio

from ..errors import ConnectionLost, RemoteProtocolError
from ..protocol import AdminParser, encode_admin
from ..transport import Endpoint

__all__ = ["admin_query"]


async def admin_query(endpoint: Endpoint, command: str, *, timeout: float | None = None) -> list[str]:
    """Send one admin command and return the answer's lines (raises on ``ERR``).

    Over TLS too when the endpoint uses it (stunnel passes the text protocol
    like any other bytes).  ``timeout`` defaults to the endpoint's connect timeout.
    """
    words = command.split()
    parser = AdminParser()
    host, port, o = endpoint.host, endpoint.port, endpoint.options
    async with asyncio.timeout(o.connect_timeout if timeout is None else timeout):
        if o.ssl is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=o.ssl, server_hostname=o.server_hostname or host
            )
        try:
            parser.sent(command)
            writer.write(encode_admin(*words))
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionLost(f"{host}:{port} closed the admin connection before answering {command!r}")
                answers = parser.feed(data)
                if answers:
                    answer = answers[0]
                    if not answer.ok:
                        raise RemoteProtocolError(f"{host}:{port} answered {command!r} with ERR {answer.text}")
                    return list(answer.lines)
        finally:
            writer.close()
