"""The handlers' schedules, run while the server serves (:mod:`gearworker.schedule.runner`).

One task, started once the worker is connected (only a worker that gearmand
lists can be elected), restarted with the new handlers after a reload, and
stopped first at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from ..config import Settings
from ..worker.dispatch import Worker
from ..worker.registry import Registry

__all__ = ["Schedules"]


class Schedules:
    """Runs a registry's schedules for a server whose workers are ``workers()``."""

    def __init__(self, settings: Settings, workers: Callable[[], Iterable[Worker]]) -> None:
        self.settings = settings
        self._workers = workers  # the current worker, and a reload's old ones still finishing jobs
        self.task: asyncio.Task[None] | None = None

    def start(self, registry: Registry, worker: Worker) -> None:
        """Run ``registry``'s schedules (if it has any) once ``worker`` is connected."""
        from ..schedule.runner import run_schedules, scheduled_functions

        functions = scheduled_functions(registry.handlers.values())
        if not functions:
            return

        async def run() -> None:
            # Only a worker that gearmand lists can be elected: wait until it is connected.
            await worker.first_connection.wait()
            await run_schedules(
                self.settings.servers,
                functions,
                worker.client_id,
                settings=self.settings,
                own=self._own_connections,
                max_age=self.settings.schedule_max_age,
            )

        self.task = asyncio.create_task(run())

    def _own_connections(self, server: str, function: str) -> int:
        """This process's live connections to ``server`` registered for ``function`` (old ones after a reload too)."""
        wire = function.encode()
        return sum(
            1
            for w in self._workers()
            for c in w.connections
            if c.name == server and c.stream is not None and wire in c.group.timeouts
        )

    async def stop(self, timeout: float) -> None:
        """Cancel the task and give it ``timeout`` seconds to unwind."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            # asyncio.wait: a cancel of our own (a second signal) is not swallowed with the scheduler's.
            await asyncio.wait({task}, timeout=timeout)
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: it ended as it may

    def cancel(self) -> None:
        """Cancel the task, not waiting for it (a forced stop)."""
        if self.task is not None:
            self.task.cancel()
