"""``gearworker run`` with every handler started as a Task (the worker before eager start), for an A/B run.

The bench's latency case runs this beside the defaults: the worker today
starts async handlers eagerly (gearworker/worker/eager.py); this patches
``Runner.start`` back to ``loop.create_task`` for every job, so one run
measures what the eager start gains on lone jobs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

import gearworker.worker.runner as r
from gearworker.app.launch import main


def _as_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    # What Runner.start did for every job before eager start.  Patching only this seam keeps
    # the rest of Runner.start (middleware, metrics) as it is today.
    return loop.create_task(coro)


r.start_eagerly = _as_task  # type: ignore[assignment]

sys.argv[0] = "gearworker"
sys.exit(main())
