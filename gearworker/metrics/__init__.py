"""What the worker reports about itself, and where it goes.

The worker, its runner and its pool call a :class:`MetricsSink`.  The default,
:data:`NO_METRICS`, does nothing; :class:`gearworker.metrics.prometheus.Metrics`
keeps Prometheus metrics and is used only when ``metrics`` is set, because
its bookkeeping costs about 3 us of every job (16% of a tiny job's CPU,
measured with py-spy) and nothing would read it otherwise.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NO_METRICS", "MetricsSink", "NullMetrics"]


class MetricsSink(Protocol):
    """The events the worker records.  Job events are on the per-job path: keep them cheap."""

    def job_started(self, function: str) -> None:
        """A job of ``function`` started."""

    def job_finished(self, function: str, outcome: str, duration: float) -> None:
        """A job ended with ``outcome`` ("complete", "fail", "timeout", "crash", "handed_back", "abandoned")."""

    def set_connection(self, server: str, state: str) -> None:
        """The worker's connections to ``server`` are now ``state`` ("connected", "connecting", "down")."""

    def reconnect(self, server: str) -> None:
        """The worker connected to ``server`` again after losing it."""

    def set_pool(self, size: int) -> None:
        """The pool has ``size`` live processes."""

    def pool_restart(self) -> None:
        """A pool process was replaced (crash, timeout kill, recycling)."""


class NullMetrics:
    """A :class:`MetricsSink` that records nothing."""

    def job_started(self, function: str) -> None:
        pass

    def job_finished(self, function: str, outcome: str, duration: float) -> None:
        pass

    def set_connection(self, server: str, state: str) -> None:
        pass

    def reconnect(self, server: str) -> None:
        pass

    def set_pool(self, size: int) -> None:
        pass

    def pool_restart(self) -> None:
        pass


#: The shared do-nothing sink.
NO_METRICS: MetricsSink = NullMetrics()
