"""Prometheus metrics and a tiny HTTP endpoint for ``/metrics`` and ``/healthz``.

The worker calls :class:`Metrics` on every job, so those calls only look up a
cached label child and bump it.  :func:`serve` answers scrapes with the minimal
asyncio server of :mod:`gearworker.metrics.http`: two GET routes do not justify
a web framework in the worker process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .. import __version__
from .http import TEXT, Answer, serve_routes

__all__ = ["BUCKETS", "OUTCOMES", "STATES", "Metrics", "serve"]

OUTCOMES = ("complete", "fail", "timeout", "crash", "handed_back", "abandoned")
STATES = ("connected", "connecting", "down")
#: Job durations span echo (tens of microseconds) to photo resizes (seconds).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    """Every metric the worker exports, in its own registry.

    Each instance has its own :class:`CollectorRegistry` unless one is given,
    so tests (and several workers in one process) do not collide.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, process_metrics: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process_metrics:
            # RSS, CPU seconds and open fds of this process, the usual process_* names.
            ProcessCollector(registry=r)
        Gauge("gearworker_info", "gearworker version", ["version"], registry=r).labels(__version__).set(1)
        self._jobs = Counter(
            "gearworker_jobs", "Jobs finished, by function and outcome", ["function", "outcome"], registry=r
        )
        self._duration = Histogram(
            "gearworker_job_duration_seconds",
            "Time from assignment to result, by function",
            ["function"],
            buckets=BUCKETS,
            registry=r,
        )
        self._in_flight = Gauge("gearworker_jobs_in_flight", "Jobs running now, by function", ["function"], registry=r)
        self._pool_size = Gauge("gearworker_pool_processes", "Process pool size for cpu=True handlers", registry=r)
        self._pool_restarts = Counter(
            "gearworker_pool_restarts", "Pool processes replaced after a crash or recycle", registry=r
        )
        self._connection = Gauge(
            "gearworker_server_connection_state",
            "Connection to each job server: 1 for its current state, 0 for the others",
            ["server", "state"],
            registry=r,
        )
        self._reconnects = Counter(
            "gearworker_server_reconnects", "Reconnections to each job server", ["server"], registry=r
        )
        # Label children are cached: .labels() builds a tuple and takes a lock.
        self._jobs_children: dict[tuple[str, str], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._in_flight_children: dict[str, Gauge] = {}
        self._connection_children: dict[str, dict[str, Gauge]] = {}
        self._reconnect_children: dict[str, Counter] = {}
        #: The last state of each server, for /healthz's reason text.
        self.connections: dict[str, str] = {}

    # -- per job (hot path) ----------------------------------------------------

    def job_started(self, function: str) -> None:
        """A job of ``function`` was assigned and starts running."""
        child = self._in_flight_children.get(function)
        if child is None:
            child = self._in_flight_children[function] = self._in_flight.labels(function)
        child.inc()

    def job_finished(self, function: str, outcome: str, duration: float) -> None:
        """A job ended with ``outcome`` (one of :data:`OUTCOMES`) after ``duration`` seconds."""
        key = (function, outcome)
        counter = self._jobs_children.get(key)
        if counter is None:
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown job outcome {outcome!r}, expected one of {OUTCOMES}")
            counter = self._jobs_children[key] = self._jobs.labels(function, outcome)
        counter.inc()
        histogram = self._duration_children.get(function)
        if histogram is None:
            histogram = self._duration_children[function] = self._duration.labels(function)
        histogram.observe(duration)
        in_flight = self._in_flight_children.get(function)
        if in_flight is None:
            in_flight = self._in_flight_children[function] = self._in_flight.labels(function)
        in_flight.dec()

    # -- connections and pool (rare) -------------------------------------------

    def set_connection(self, server: str, state: str) -> None:
        """Record that the connection to ``server`` is now ``state`` (one of :data:`STATES`)."""
        children = self._connection_children.get(server)
        if children is None:
            children = self._connection_children[server] = {s: self._connection.labels(server, s) for s in STATES}
        if state not in children:
            raise ValueError(f"unknown connection state {state!r}, expected one of {STATES}")
        for name, child in children.items():
            child.set(1 if name == state else 0)
        self.connections[server] = state

    def reconnect(self, server: str) -> None:
        """Count one reconnection to ``server``."""
        child = self._reconnect_children.get(server)
        if child is None:
            child = self._reconnect_children[server] = self._reconnects.labels(server)
        child.inc()

    def set_pool(self, size: int) -> None:
        """Record the number of live pool processes."""
        self._pool_size.set(size)

    def pool_restart(self) -> None:
        """Count one pool process replaced."""
        self._pool_restarts.inc()

    # -- reading ---------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def unhealthy_reason(self) -> str:
        """Why /healthz would fail, judged from the recorded connection states."""
        if not self.connections:
            return "no job server connection yet"
        if not any(state == "connected" for state in self.connections.values()):
            states = ", ".join(f"{server} {state}" for server, state in sorted(self.connections.items()))
            return f"not connected to any job server ({states})"
        return "worker unhealthy (process pool or shutdown)"


# -- HTTP ------------------------------------------------------------------------


async def serve(metrics: Metrics, host: str, port: int, healthy: Callable[[], bool] | None = None) -> asyncio.Server:
    """Serve ``GET /metrics`` and ``GET /healthz`` on ``host:port`` (:func:`gearworker.metrics.http.serve_routes`).

    ``healthy()`` decides /healthz: 200 ``ok`` when True, 503 with the reason
    otherwise.  Without it, healthy means "connected to at least one server".
    ``port`` 0 picks a free port (read it from ``server.sockets``).  Close with
    ``server.close(); await server.wait_closed()``.
    """
    check = healthy if healthy is not None else (lambda: "connected" in metrics.connections.values())

    async def scrape() -> Answer:
        return 200, metrics.render(), CONTENT_TYPE_LATEST

    async def health() -> Answer:
        if check():
            return 200, b"ok\n", TEXT
        return 503, metrics.unhealthy_reason().encode() + b"\n", TEXT

    return await serve_routes({"/metrics": scrape, "/healthz": health}, host, port)
