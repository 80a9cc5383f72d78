"""Submitting failed jobs again: ``gearworker failed retry`` and the console's Retry share this.

A retry submits the job as a background job with its function, workload and
unique id, and removes its record once the job server has the job (a record
whose job never reached a server stays).  If the job fails again, the worker
writes a new record.  A record that kept only the start of its workload
(``failed_workload_limit``) would run a different job: it is skipped unless
``force``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .query import FailedQuery
from .store import FailedJob

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["Retried", "retry_jobs", "truncated_reason"]

#: Submits in flight at once (the client pipelines them on one connection per server).
CONCURRENT_SUBMITS = 64


@dataclass(frozen=True, slots=True)
class Retried:
    """What became of one record: its new job handle, or why it was left as it is."""

    id: str
    function: str
    handle: str | None = None  # the new job's handle once a server has it
    server: str | None = None
    problem: str | None = None  # set when the record was not retried (it stays)
    truncated: bool = False  # the problem is a workload cut to the limit

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "function": self.function}
        if self.ok:
            out.update(handle=self.handle, server=self.server)
        else:
            out.update(problem=self.problem, truncated=self.truncated)
        return out


def truncated_reason(job: FailedJob) -> str:
    return (
        f"record {job.id} kept {len(job.workload)} of {job.workload_size} workload bytes: "
        "retrying would run a different job"
    )


async def retry_jobs(
    client: Client, query: FailedQuery, jobs: Sequence[FailedJob], *, force: bool = False
) -> list[Retried]:
    """Submit each of ``jobs`` again as a background job; remove the records a server took, and their repeats.

    The deletes run in a thread (the store is a file); one answer per job, in order.
    """
    # The repeats are found before anything is submitted: a worker may run the resubmitted job,
    # fail it again and record it before the submit returns, and that record is new, not a repeat.
    repeats = await asyncio.to_thread(query.repeats, jobs)
    semaphore = asyncio.Semaphore(CONCURRENT_SUBMITS)

    async def one(job: FailedJob) -> Retried:
        if job.truncated and not force:
            return Retried(job.id, job.function, problem=truncated_reason(job), truncated=True)
        async with semaphore:
            try:
                handle = await client.submit_background(job.function, job.workload, unique=job.unique or None)
            except Exception as e:
                # Any refusal (no server up, a unique id too long, ...) is this job's problem alone:
                # raised, it would fail the whole batch after the others were submitted, and their
                # records, kept, would be submitted again by the next retry.
                return Retried(job.id, job.function, problem=f"{type(e).__name__}: {e}")
        return Retried(job.id, job.function, handle=handle.decode(errors="replace"), server=handle.server or None)

    results = list(await asyncio.gather(*(one(job) for job in jobs)))
    done = [r.id for r in results if r.ok]
    if done:
        # A job's repeats (the same function and unique id, recorded again after gearmand re-ran it)
        # are the job that was just submitted again: they go with it.
        gone = dict.fromkeys([*done, *(i for job_id in done for i in repeats.get(job_id, ()))])
        await asyncio.to_thread(query.delete, list(gone))
    return results
