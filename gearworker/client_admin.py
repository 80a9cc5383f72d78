"""Gearman's text admin protocol (``status``, ``workers``...) over a short-lived connection.

Admin queries are rare, so each opens its own connection instead of sharing
(and risking the state of) the binary connection that carries jobs.
"""

from __future__ import annotations

import asyncio

from .errors import ConnectionLost, RemoteProtocolError
from .protocol import AdminParser, encode_admin


async def admin_query(host: str, port: int, command: str, *, timeout: float = 5.0) -> list[str]:
    """Send one admin command and return the answer's lines (raises on ``ERR``)."""
    words = command.split()
    parser = AdminParser()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
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
