"""gearworker: an asyncio worker server and client for Gearman."""

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
from .handlers import handler
from .job import CpuJob, Job

__version__ = "0.1.0"

__all__ = [
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
]
