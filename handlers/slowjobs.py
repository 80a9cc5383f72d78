"""An example middleware: a warning for every job that takes longer than it should.

Middlewares run around every job of this worker (docs/jobs.md).  This one is
marked with ``@middleware`` in a handler module, so the worker that loads
this folder uses it; one in your own package would go in the settings
instead: ``MIDDLEWARE = ["myapp.jobs:SlowJobs"]``.
"""

from __future__ import annotations

import structlog

from gearworker.middleware import JobInfo, JobResult, Middleware, middleware

log = structlog.get_logger("handlers.slowjobs")

#: Jobs running longer than this many seconds (every attempt and retry wait included) are logged.
SLOW_SECONDS = 60.0


@middleware
class SlowJobs(Middleware):
    """Log ``job.slow`` (function, handle, duration, outcome) for jobs slower than :data:`SLOW_SECONDS`."""

    def after(self, job: JobInfo, result: JobResult) -> None:
        if result.duration > SLOW_SECONDS:
            log.warning(
                "job.slow",
                function=job.function,
                handle=job.handle_text,
                unique=job.unique_text,
                duration=round(result.duration, 3),
                outcome=result.outcome,
                attempts=result.attempts,
            )
