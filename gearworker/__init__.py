"""gearworker: an asyncio worker server and client for Gearman."""

from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    ConnectionLost,
    GearworkerError,
    HandlerError,
    JobError,
    JobException,
    JobFailed,
    JobTimeout,
    LocalProtocolError,
    NoServerAvailable,
    ProtocolError,
    RemoteProtocolError,
)
from .worker.job import CpuJob, Job
from .worker.registry import handler

if TYPE_CHECKING:
    from .client import Client, submit, submit_background

# The client pulls in asyncio machinery a handler module never needs: import it on first use.
_CLIENT_NAMES = frozenset({"Client", "submit", "submit_background"})


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'gearworker' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Client",
    "ConfigError",
    "ConnectionLost",
    "CpuJob",
    "GearworkerError",
    "HandlerError",
    "Job",
    "JobError",
    "JobException",
    "JobFailed",
    "JobTimeout",
    "LocalProtocolError",
    "NoServerAvailable",
    "ProtocolError",
    "RemoteProtocolError",
    "__version__",
    "handler",
    "submit",
    "submit_background",
]
