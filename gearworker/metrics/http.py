"""A tiny HTTP/1.1 server for a few GET routes (``/metrics``, ``/healthz``): one request per connection.

The worker's metrics endpoint and the Gearman exporter (``gearworker exporter``,
``gearworker web --metrics``) use it: a handful of read-only routes do not
justify a web framework, and nothing here may take the process down.  Each
route is an async callable returning ``(status, body, content type)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

import structlog

__all__ = ["Answer", "Handler", "serve_routes"]

log = structlog.get_logger("gearworker.metrics")

Answer = tuple[int, bytes, str]
Handler = Callable[[], Awaitable[Answer]]

TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_READ_TIMEOUT = 10.0
_MAX_HEADER = 8192


async def serve_routes(routes: Mapping[str, Handler], host: str, port: int) -> asyncio.Server:
    """Answer ``GET``/``HEAD`` of each path in ``routes`` on ``host:port`` (port 0: any free one).

    Other paths get 404 naming the routes, other methods 405, garbage 400.
    Close with ``server.close(); await server.wait_closed()``.
    """
    not_found = f"not found: try {' or '.join(routes)}\n".encode()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(_answer(routes, not_found, reader, writer), _READ_TIMEOUT)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except Exception:  # a scrape must never take the process down
            log.exception("metrics.request_failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(on_connect, host, port, limit=_MAX_HEADER)
    bound = server.sockets[0].getsockname() if server.sockets else (host, port)
    log.debug("metrics.listening", host=bound[0], port=bound[1])
    return server


async def _answer(
    routes: Mapping[str, Handler], not_found: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        await _respond(writer, 400, b"bad request\n")
        return
    method, target = parts[0], parts[1].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        await _respond(writer, 405, b"only GET\n", extra=b"Allow: GET, HEAD\r\n")
        return
    handler = routes.get(target)
    if handler is None:
        await _respond(writer, 404, not_found, body=method == "GET")
        return
    status, payload, content_type = await handler()
    await _respond(writer, status, payload, content_type, body=method == "GET")


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    payload: bytes,
    content_type: str = TEXT,
    *,
    body: bool = True,
    extra: bytes = b"",
) -> None:
    head = (
        (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n"
        ).encode()
        + extra
        + b"\r\n"
    )
    writer.write(head + payload if body else head)
    await writer.drain()
