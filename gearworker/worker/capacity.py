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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .registry import Handler

__all__ = ["Bucket", "Function", "Group"]


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


@dataclass(slots=True, eq=False)
class Function:
    """A function name we serve, with its handler and the limits it counts against."""

    name: str
    wire: bytes
    handler: Handler
    buckets: tuple[Bucket, ...]
    #: A scheduled handler's: seconds after a tick's time past which its job is dropped, not run.
    max_tick_age: float | None = None


@dataclass(slots=True, eq=False)
class Group:
    """Functions that count against the same limits, served on their own connections."""

    name: str
    buckets: tuple[Bucket, ...]
    timeouts: dict[bytes, int | None] = field(default_factory=dict)  # CAN_DO_TIMEOUT values, milliseconds

    def reserve(self, grabs: int) -> None:
        """Each outstanding grab may come back with a job: hold a place for it in every limit."""
        for bucket in self.buckets:
            bucket.reserved += grabs

    def release(self, grabs: int) -> None:
        """``grabs`` answered (or lost) grabs give back the places they reserved."""
        for bucket in self.buckets:
            bucket.reserved -= grabs

    @property
    def has_room(self) -> bool:
        """Every limit of the group has a free place."""
        return all(b.free > 0 for b in self.buckets)
