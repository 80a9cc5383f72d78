"""The asyncio Gearman client.

:mod:`.api` is what callers use (:class:`Client`, :func:`submit`);
:mod:`.routing` matches one connection's replies to the callers waiting for
them, on top of :mod:`gearworker.transport`; :mod:`.admin` speaks the text
admin protocol; :mod:`.cli` is ``gearworker submit`` and ``gearworker status``.
"""

from .api import (
    Client,
    Handle,
    Payload,
    Priority,
    RunningJob,
    default_client,
    encode_payload,
    submit,
    submit_background,
)
from .routing import JobStatus, Progress, Result, ServerRefused

__all__ = [
    "Client",
    "Handle",
    "JobStatus",
    "Payload",
    "Priority",
    "Progress",
    "Result",
    "RunningJob",
    "ServerRefused",
    "default_client",
    "encode_payload",
    "submit",
    "submit_background",
]
