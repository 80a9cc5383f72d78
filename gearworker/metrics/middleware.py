"""The middleware that feeds the Prometheus metrics: jobs started, finished by outcome, durations."""

from __future__ import annotations

from typing import Any

from ..middleware import JobInfo, JobResult, Middleware

__all__ = ["MetricsMiddleware"]


class MetricsMiddleware(Middleware):
    """Feeds :class:`gearworker.metrics.prometheus.Metrics` (jobs started, finished by outcome, durations)."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def before(self, job: JobInfo) -> None:
        self.metrics.job_started(job.function)

    def after(self, job: JobInfo, result: JobResult) -> None:
        self.metrics.job_finished(job.function, result.outcome, result.duration)
