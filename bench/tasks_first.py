"""``gearworker run`` with every handler started as a Task (the worker before eager start), for an A/B run.

The bench's latency case runs this beside the defaults: the worker today
starts async handlers eagerly (gearworker/worker/eager.py); this patches
``Runner.start`` back to ``loop.create_task`` for every job, so one run
measures what the eager start gains on lone jobs.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import gearworker.worker.runner as r
from gearworker.cli import main
from gearworker.protocol import JobAssigned


def _start(self: Any, conn: Any, function: Any, assigned: JobAssigned) -> Any:
    # Runner.start as it was before eager start (main at commit d3484af).
    assert conn.stream is not None
    self._tokens += 1
    job = r.ActiveJob(function, assigned.handle, assigned.unique, conn, conn.stream, self._tokens, time.monotonic())
    conn.session.attach(assigned.handle, job)
    if self._job_metrics is not None:
        self._job_metrics.job_started(function.name)
    if function.handler.cpu:
        job.task = self._loop.create_task(self._run_cpu(job, assigned.data))
    else:
        job.task = self._loop.create_task(self._run_async(job, assigned.data))
    return job


r.Runner.start = _start  # type: ignore[method-assign]

sys.argv[0] = "gearworker"
sys.exit(main())
