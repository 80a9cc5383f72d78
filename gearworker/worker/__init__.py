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
    from .pool import ChildDied, Pool, PoolTimeout
    from .runner import ActiveJob, Runner
    from .worker import Connection, Function, Group, Worker

_LAZY = {
    "ChildDied": "pool",
    "Pool": "pool",
    "PoolTimeout": "pool",
    "ActiveJob": "runner",
    "Runner": "runner",
    "Connection": "worker",
    "Function": "worker",
    "Group": "worker",
    "Worker": "worker",
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
    "Connection",
    "CpuJob",
    "CpuJobSpec",
    "Function",
    "Group",
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
