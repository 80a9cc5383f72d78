"""Capacity accounting: never grab a job that cannot start now.

Each limit (the process-wide concurrency, a handler's own limit, the process
pool) is a :class:`Bucket`.  A job uses one place in each bucket of its
function.  Functions with the same buckets share a connection (a group), and
an outstanding GRAB_JOB on it may come back with a job of any of them, so each
grab reserves one place in every bucket of its group; a connection grabs only
while each of those has a free place.  That keeps a CPU job whose pool is full
on the server, where another worker machine may be idle.

:func:`build_functions` makes the buckets, functions and groups of a
:class:`~gearworker.worker.dispatch.Worker` from the settings and handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from .registry import Handler, Registry

__all__ = ["Bucket", "Function", "Group", "build_functions"]


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


def build_functions(
    s: Settings, registry: Registry, global_bucket: Bucket, pool_size: int | None
) -> tuple[dict[bytes, Function], list[Group]]:
    """Every function served, by its wire name, and the groups they share (one per set of limits)."""
    pool_bucket = Bucket("pool", pool_size) if pool_size is not None else None
    per_handler: dict[str, Bucket] = {}
    for name, h in registry.handlers.items():
        limit = s.handler_concurrency.get(name, h.concurrency)
        if limit is not None:
            per_handler[name] = Bucket(f"handler:{name}", limit)
    functions: dict[bytes, Function] = {}
    groups: dict[tuple[int, ...], Group] = {}
    for name, h in sorted(registry.functions.items()):
        buckets = [global_bucket]
        if h.name in per_handler:
            buckets.append(per_handler[h.name])
        if h.cpu:
            if pool_bucket is None:
                raise RuntimeError("a cpu=True handler needs the process pool")
            buckets.append(pool_bucket)
        wire = name.encode()
        max_age = s.schedule_max_age if h.schedule is not None else None
        function = functions[wire] = Function(name, wire, h, tuple(buckets), max_age)
        key = tuple(id(b) for b in buckets)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group("+".join(b.name for b in buckets), function.buckets)
        group.timeouts[wire] = _server_timeout(h, s.timeout_margin)
    return functions, list(groups.values())


def _server_timeout(h: Handler, margin: float) -> int | None:
    if h.timeout is None:
        return None
    # Our own timeout fires first and fails the job.  gearmand's (CAN_DO_TIMEOUT,
    # milliseconds, at least about 1 s, on 1.1.20 and 2.0.0 alike) re-queues the
    # job on expiry, silently, rather than failing it as PROTOCOL says.  It is
    # no hang detector: gearmand keeps one timer per connection, for one job
    # (2.0.0: the newest assigned; 1.1.20: the one it was first armed for), and
    # PRE_SLEEP removes it.  So it never fires for a lone job (our wake-up grab
    # has PRE_SLEEP behind it), and for a worker frozen during a burst it puts
    # back one of the jobs it holds (tests/test_gearmand_versions.py).  Still
    # sent, as measured nothing argues against it: that one job runs elsewhere
    # rather than wait for the frozen worker (and runs twice if it wakes up).
    # With retries, every attempt and the waits between them run before the
    # job ends: the value must cover them all, or a slow job would run twice.
    return int((h.retry.budget(h.timeout) + margin) * 1000)
