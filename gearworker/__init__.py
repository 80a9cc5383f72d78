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
    NoRetry,
    NoServerAvailable,
    ProtocolError,
    RemoteProtocolError,
)

if TYPE_CHECKING:
    from .client import Client, submit, submit_background
    from .worker.job import CpuJob, Job
    from .worker.registry import handler

# Imported on first use: the client pulls in asyncio machinery a handler module never needs,
# and `gearworker` (gearworker.app.launch) must start catching stop signals before anything heavy
# is imported (the handler API alone costs ~70 ms of imports).
_LAZY = {
    "Client": "client",
    "submit": "client",
    "submit_background": "client",
    "CpuJob": "worker.job",
    "Job": "worker.job",
    "handler": "worker.registry",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gearworker' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def _version() -> str:
    """The installed package's version: written once, in pyproject.toml (read on first use, it costs ~10 ms)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version(__name__)
    except PackageNotFoundError:  # a source tree that was never installed
        value = "0+unknown"
    globals()["__version__"] = value
    return value


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
    "NoRetry",
    "NoServerAvailable",
    "ProtocolError",
    "RemoteProtocolError",
    "__version__",
    "handler",
    "submit",
    "submit_background",
]
