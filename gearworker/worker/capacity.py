"""Capacity accounting: never grab a job that cannot start now.

Each limit (the process-wide concurrency, a handler's own limit, the process
pool) is a :class:`Bucket`.  A job uses one place in each bucket of its
function.  Functions with the same buckets share a connection (a group), and
an outstanding GRAB_JOB on it may come back with a job of any of them, so each
grab reserves one place in every bucket of its group; a connection grabs only
while each of those has a free place.  That keeps a CPU job whose pool is full
on the server, where another worker machine may be idle.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Bucket"]


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
