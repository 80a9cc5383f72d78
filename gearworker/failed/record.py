"""The middleware that writes a record of each job that failed for good (the ``failed_jobs`` setting)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog

from ..config import Settings
from ..middleware import FINAL_HOOK_TIMEOUT, Failure, JobInfo, Middleware
from .store import FailedJob, FailedStore
from .writer import RecordWriter

__all__ = ["FAILED_OUTCOMES", "RECORD_TIMEOUT", "RecordFailures"]

#: Outcomes that are failures of the job (not "complete", not "handed_back" to gearmand for another worker).
FAILED_OUTCOMES = frozenset({"fail", "timeout", "crash"})
#: Seconds a failed job waits for its record to be durable before its failure is reported anyway
#: (sqlite's own busy timeout is 10 s: a store locked or a disk hung longer than this is an outage).
RECORD_TIMEOUT = 30.0

log = structlog.get_logger("gearworker.failed")


class RecordFailures(Middleware):
    """Writes a record of each job that failed for good, durably, before its failure is reported.

    The record is written while gearmand still holds the job
    (``before_final_failure``): the job awaits it (committed in sqlite, or
    its file and folder fsynced) before WORK_FAIL leaves.  A worker killed
    between the two leaves the job with gearmand, which runs it again, so a
    failure is never reported without a record; a job may be recorded twice
    (the store marks the later record as a repeat).  The writes happen in a
    thread, in batches (:class:`~gearworker.failed.writer.RecordWriter`), so
    the event loop never waits on the disk.  A store that cannot be written is
    logged (``failed.record_error``) and the failure is still reported.

    Before a job with a unique id is recorded, its server (one of
    ``servers``) is asked whether a client waits for it; that client connects
    as ``settings`` say (TLS, timeouts: :meth:`~gearworker.Client.from_settings`;
    None: the built-in options).
    """

    #: The chain's per-hook limit does not apply: the status query keeps FINAL_HOOK_TIMEOUT, the
    #: write RECORD_TIMEOUT (a record must not be given up on after 2 s of a busy disk).
    final_hook_timeout = None

    def __init__(self, store: FailedStore, servers: Sequence[str] = (), *, settings: Settings | None = None) -> None:
        self.store = store
        self.servers = list(servers)
        self.settings = settings if settings is not None else Settings()
        self.writer = RecordWriter(store)
        self._client: Any = None

    def on_failure(self, job: JobInfo, failure: Failure, attempt: int, final: bool) -> None:
        if final:  # the last attempt: what its record says
            job.state["failure"] = (failure.message, attempt)

    async def before_final_failure(self, job: JobInfo) -> None:
        """Record the job (unless a client waits for it), durably, while gearmand still holds it."""
        message, attempts = job.state.get("failure", ("", job.attempts))
        try:
            async with asyncio.timeout(FINAL_HOOK_TIMEOUT):
                waiting = await self._waiting_clients(job)
        except Exception:  # gearmand did not say: record it (a harmless extra record for a foreground job)
            waiting = 0
        if waiting:
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
            message or "failed",
            attempts,
            job.workload,
            len(job.workload),
            job.server,
            time.time(),
        )
        try:
            async with asyncio.timeout(RECORD_TIMEOUT):
                job_id = await self.writer.write(record)
        except Exception as e:
            log.error(
                "failed.record_error",
                function=record.function,
                handle=record.handle,
                unique=record.unique,
                error=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
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

    async def _waiting_clients(self, job: JobInfo) -> int:
        """How many clients wait for the job (GET_STATUS_UNIQUE to its server); 0 when it cannot be asked."""
        if not job.unique or not self.servers:
            return 0
        if self._client is None:
            from ..client import Client

            self._client = Client.from_settings(self.settings, self.servers)
        server = job.server if job.server in self.servers else None
        status = await self._client.status_unique(job.unique, server=server)
        return status.waiting if status.known else 0

    async def flush(self, timeout: float | None = None) -> None:
        """At shutdown: let the records being written finish, end the writer's thread, close the status client.

        Waits at most ``timeout`` seconds for the records; past it they are logged
        (``failed.records_unwritten``) and left to the writer's thread.
        """
        if not await self.writer.close(timeout):
            log.warning(
                "failed.records_unwritten",
                records=self.writer.pending,
                timeout=timeout,
                reason="the failed_jobs store did not finish writing them in time",
            )
        if self._client is not None:
            await self._client.close()
