"""The middleware that writes a record of each job that failed for good (the ``failed_jobs`` setting)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog

from ..middleware import JobInfo, JobResult, Middleware
from .store import FailedJob, FailedStore

__all__ = ["FAILED_OUTCOMES", "RecordFailures"]

#: Outcomes that are failures of the job (not "complete", not "handed_back" to gearmand for another worker).
FAILED_OUTCOMES = frozenset({"fail", "timeout", "crash"})

log = structlog.get_logger("gearworker.failed")


class RecordFailures(Middleware):
    """The middleware that writes a record of each job that failed for good (the ``failed_jobs`` setting).

    The write (an sqlite insert or a file, a few milliseconds with fsync)
    runs in a thread so the event loop never waits on the disk; a store that
    cannot be written is logged (``failed.record_error``) and the job's
    failure is still reported to gearmand as usual.
    """

    def __init__(self, store: FailedStore, servers: Sequence[str] = ()) -> None:
        self.store = store
        self.servers = list(servers)
        self.pending: set[asyncio.Future[Any]] = set()
        self._client: Any = None

    async def before_final_failure(self, job: JobInfo) -> None:
        """Ask gearmand (GET_STATUS_UNIQUE) how many clients wait for the job, while it still holds it."""
        if not job.unique or not self.servers:
            return
        if self._client is None:
            from ..client import Client

            self._client = Client(self.servers)
        server = job.server if job.server in self.servers else None
        status = await self._client.status_unique(job.unique, server=server)
        if status.known:
            job.state["waiting_clients"] = status.waiting

    def after(self, job: JobInfo, result: JobResult) -> None:
        if result.outcome not in FAILED_OUTCOMES:
            return
        if job._state is not None and job._state.get("waiting_clients", 0) > 0:
            log.info(
                "failed.not_recorded",
                function=job.function,
                handle=job.handle_text,
                unique=job.unique_text,
                reason="a client waits for the job and got the failure",
            )
            return
        record = FailedJob(
            job.function,
            job.handle_text,
            job.unique_text,
            result.error or result.outcome,
            result.attempts,
            job.workload,
            len(job.workload),
            job.server,
            time.time(),
        )
        future = asyncio.get_running_loop().run_in_executor(None, self._write, record)
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)

    def _write(self, record: FailedJob) -> None:
        try:
            job_id = self.store.add(record)
        except Exception as e:
            log.error(
                "failed.record_error", function=record.function, handle=record.handle, error=f"{type(e).__name__}: {e}"
            )
            return
        log.info(
            "failed.recorded",
            id=job_id,
            function=record.function,
            handle=record.handle,
            unique=record.unique,
            attempts=record.attempts,
        )

    async def flush(self) -> None:
        """Wait for the records being written (at shutdown); close the status client."""
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
