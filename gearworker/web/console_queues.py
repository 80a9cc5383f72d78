"""The console's queue and worker routes: waiting and running jobs per function, their history, the workers.

``GET /api/queues`` sums gearmand's ``status`` per function and server
(waiting = gearmand's total minus running) with the failed-store counts and,
when the workers' metrics addresses are set, their rates and run times;
``GET /api/queues/history`` reads the sampled history (:mod:`.history`);
``GET /api/workers`` groups gearmand's ``workers`` lists by host.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..clientid import parse_client_id
from ..errors import NoServerAvailable
from .console import Console
from .history import SPANS
from .security import refuse
from .service import explain

__all__ = ["QueueRoutes", "group_workers"]

log = structlog.get_logger("gearworker.web")


class QueueRoutes:
    """The queue, history and worker routes, over the console's samples and gearmand's admin answers."""

    def __init__(self, console: Console) -> None:
        self.console = console

    async def queues(self, request: Request) -> Response:
        status = await self.console.web.gateway.cached_status()
        counts = await self.console.failed_counts()
        stats = self.console.worker_stats.summary() if self.console.worker_stats is not None else None
        servers = []
        totals: dict[str, dict[str, Any]] = {}

        def total(function: str) -> dict[str, Any]:
            return totals.setdefault(
                function, {"function": function, "total": 0, "waiting": 0, "running": 0, "workers": 0}
            )

        for server in status["servers"]:
            rows = [_queue_row(f) for f in server["functions"]]
            for row in rows:
                summed = total(row["function"])
                for key in ("total", "waiting", "running", "workers"):
                    summed[key] += row[key]
            servers.append(
                {"address": server["address"], "ok": server["ok"], "error": server["error"], "functions": rows}
            )
        idle = {"done_per_s": 0.0, "failed_per_s": 0.0, "p50": None, "p95": None}
        for function in sorted(set(counts or {}) | set(stats["functions"] if stats else {})):
            total(function)  # known from the store or the workers, if not from gearmand
        for function, summed in totals.items():
            summed["failed_records"] = None if counts is None else counts.get(function, 0)
            if stats is not None:
                summed.update(stats["functions"].get(function, idle))
        return JSONResponse(
            {
                "servers": servers,
                "functions": [totals[f] for f in sorted(totals)],
                "failed_store": self.console.query is not None,
                "worker_metrics": None if stats is None else {"window": stats["window"], "workers": stats["workers"]},
                "time": status.get("time", time.time()),
            }
        )

    async def history(self, request: Request) -> Response:
        params = request.query_params
        span = params.get("span", "hour")
        if span not in SPANS:
            return refuse(400, f"span must be one of: {', '.join(SPANS)}.")
        try:
            data = await self.console.history.query(
                span, function=params.get("function") or None, server=params.get("server") or None
            )
        except Exception as e:
            log.warning("web.history.read_error", error=f"{type(e).__name__}: {e}")
            return refuse(503, "The queue history cannot be read just now.")
        return JSONResponse(data)

    async def workers(self, request: Request) -> Response:
        servers = self.console.web.gateway.servers
        tables: dict[str, Any] = {}
        failure: Exception | None = None
        try:
            client = await self.console.web.gateway.client()
            tables = await client.workers()
        except Exception as e:
            failure = e
        listed = [
            {
                "address": s,
                "ok": s in tables,
                "error": None if s in tables else explain(failure or NoServerAvailable(s), [s]),
                "clients": sum(1 for r in tables.get(s, ()) if not r.functions),
            }
            for s in servers
        ]
        return JSONResponse({"servers": listed, "hosts": group_workers(tables), "time": time.time()})

    # -- metrics -------------------------------------------------------------------------------------


def _queue_row(f: Mapping[str, Any]) -> dict[str, Any]:
    queued, running = int(f["queued"]), int(f["running"])
    return {
        "function": f["function"],
        "total": queued,
        "waiting": max(0, queued - running),
        "running": running,
        "workers": int(f["workers"]),
    }


def group_workers(tables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """gearmand's ``workers`` rows (connections with functions) by host, then by process.

    A gearworker process names its host, pid and version in its client id; any
    other worker is grouped by its address (the host as gearmand saw it) and
    client id.
    """
    hosts: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for server, rows in tables.items():
        for row in rows:
            if not row.functions:
                continue  # a client, not a worker
            ours = parse_client_id(row.client_id)
            host = ours.host if ours is not None else row.address
            process = hosts.setdefault(host, {}).setdefault(
                (row.client_id, row.address if ours is None else ""),
                {
                    "client_id": row.client_id,
                    "gearworker": ours is not None,
                    "pid": ours.pid if ours is not None else None,
                    "version": ours.version if ours is not None else None,
                    "addresses": set(),
                    "functions": set(),
                    "servers": set(),
                    "connections": 0,
                },
            )
            process["addresses"].add(row.address)
            process["functions"].update(row.functions)
            process["servers"].add(server)
            process["connections"] += 1
    out = []
    for host in sorted(hosts):
        processes = []
        for process in sorted(hosts[host].values(), key=lambda p: (p["pid"] or 0, p["client_id"])):
            processes.append(
                {
                    **process,
                    "addresses": sorted(process["addresses"]),
                    "functions": sorted(process["functions"]),
                    "servers": sorted(process["servers"]),
                }
            )
        functions = sorted({f for p in processes for f in p["functions"]})
        out.append({"host": host, "processes": processes, "functions": functions})
    return out
