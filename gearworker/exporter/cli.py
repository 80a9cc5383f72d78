"""``gearworker exporter --listen HOST:PORT``: gearmand's state (and the failed-job counts) for Prometheus, alone.

The same text as the web app's ``/metrics`` (:mod:`.collect`), for a cluster
that scrapes the job servers without running the web app: ``GET /metrics``
asks each server (``--server``, else the settings' ``servers``) at every
scrape; ``GET /healthz`` is 200 while the exporter runs (``gearman_up`` says
whether a server answers).  With ``failed_jobs`` set (or ``--store``) it also
counts the failed-job records per function.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import structlog

__all__ = ["DEFAULT_LISTEN", "register", "run"]

log = structlog.get_logger("gearworker.exporter")

#: The common Gearman exporter's port.
DEFAULT_LISTEN = "127.0.0.1:9418"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gearworker exporter`` to the command line."""
    parser = sub.add_parser(
        "exporter",
        help="serve gearmand's state (jobs waiting per function...) as Prometheus metrics",
        description="Serve gearmand's state per server and function at /metrics, for Prometheus and autoscalers.",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to serve /metrics and /healthz on; a bare port binds 127.0.0.1 (default: {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--server",
        dest="servers",
        action="append",
        metavar="HOST:PORT",
        help="job server to watch; repeat for several (default: the settings' servers, else 127.0.0.1:4730)",
    )
    parser.add_argument("--settings", metavar="PATH", help="settings file (default: $GEARWORKER_SETTINGS)")
    parser.add_argument("--store", metavar="PATH", help="failed-job store to count (default: the failed_jobs setting)")
    parser.add_argument("--no-failed", action="store_true", help="do not count failed-job records")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 2 on a bad setting or an address that cannot be listened on."""
    from ..address import parse_address
    from ..config import load
    from ..errors import ConfigError
    from ..logs import configure as configure_logs

    try:
        settings = load(args.settings, overrides={"servers": args.servers})
        host, port = parse_address(args.listen, default_host="127.0.0.1", default_port=None)
    except (ConfigError, ValueError) as e:
        print(f"gearworker exporter: {e}", file=sys.stderr)
        return 2
    configure_logs(settings.log_level, settings.log_format, settings.log_file)
    store = None if args.no_failed else (args.store or settings.failed_jobs)
    try:
        return asyncio.run(_serve(settings, host, port, store))
    except OSError as e:
        print(f"gearworker exporter: cannot listen on {host}:{port}: {e}", file=sys.stderr)
        return 2


async def _serve(settings: Any, host: str, port: int, store: str | None) -> int:
    from ..client import Client
    from ..metrics.http import TEXT, Answer, serve_routes
    from .collect import CONTENT_TYPE, gather, render

    query = None
    if store:
        from ..failed import open_query

        query = open_query(store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Client.from_settings(settings) as client:
        servers = [s.address for s in client.servers]  # as the client spells them

        async def metrics() -> Answer:
            states = await gather(client, servers)
            counts, store_up = None, None
            if query is not None:
                try:
                    counts, store_up = await asyncio.to_thread(query.counts_by_function), True
                except Exception as e:
                    store_up = False
                    log.warning("exporter.failed_store_error", store=store, error=f"{type(e).__name__}: {e}")
            return 200, render(states, counts, failed_store_up=store_up), CONTENT_TYPE

        async def healthz() -> Answer:
            return 200, b"ok\n", TEXT

        server = await serve_routes({"/metrics": metrics, "/healthz": healthz}, host, port)
        bound = server.sockets[0].getsockname()[:2] if server.sockets else (host, port)
        log.info("exporter.listening", url=f"http://{bound[0]}:{bound[1]}/metrics", servers=servers, failed_store=store)
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()
    log.info("exporter.stopped")
    return 0
