"""Capacity accounting: never grab a job that cannot start now.

Each limit (the process-wide concurrency, a handler's own limit, the process
pool) is a :class:`Bucket`.  A job uses one place in each bucket of its
function.  An outstanding GRAB_JOB may come back with a job of *any* function
registered on that connection, so it reserves one place in every bucket those
functions use; a function stays registered (CAN_DO) only while each of its
buckets has a free place for one more grab.  That keeps a CPU job whose pool
is full on the server, where another worker machine may be idle.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class Bucket:
    """One limit: ``used`` running jobs plus ``reserved`` outstanding grabs."""

    name: str
    limit: int
    used: int = 0
    reserved: int = 0

    @property
    def free(self) -> int:
        return self.limit - self.used - self.reserved


def union(groups: list[tuple[Bucket, ...]]) -> tuple[Bucket, ...]:
    """The distinct buckets of several functions, in a stable order."""
    seen: dict[int, Bucket] = {}
    for group in groups:
        for bucket in group:
            seen.setdefault(id(bucket), bucket)
    return tuple(seen.values())
