"""The worker side: handlers, the process pool, capacity, and the wiring to job servers.

:class:`Worker` wires one :class:`~gearworker.protocol.WorkerSession` per
connection to the transport and to capacity; :class:`Runner` runs each job;
:class:`Pool` runs ``cpu=True`` handlers; :class:`Registry` holds the handlers
found by :func:`discover`.

A handler module imports ``gearworker.handler`` and nothing else: the
machinery below loads on first use, so that import stays light.
"""

from typing import TYPE_CHECKING, Any

from .job import CpuJob, CpuJobSpec, Job
from .registry import Handler, Registry, discover, handler

if TYPE_CHECKING:
    from .capacity import Function, Group
    from .connection import GroupConnection
    from .dispatch import Worker
    from .pool import ChildDied, Pool, PoolTimeout
    from .runner import ActiveJob, Runner

_LAZY = {
    "ChildDied": "pool",
    "Pool": "pool",
    "PoolTimeout": "pool",
    "ActiveJob": "runner",
    "Runner": "runner",
    "GroupConnection": "connection",
    "Function": "capacity",
    "Group": "capacity",
    "Worker": "dispatch",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gearworker.worker' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "ActiveJob",
    "ChildDied",
    "CpuJob",
    "CpuJobSpec",
    "Function",
    "Group",
    "GroupConnection",
    "Handler",
    "Job",
    "Pool",
    "PoolTimeout",
    "Registry",
    "Runner",
    "Worker",
    "discover",
    "handler",
]
