"""The asyncio Gearman client.

:mod:`.api` is what callers use (:class:`Client`, :func:`submit`), and
:mod:`.results` what they get back; :mod:`.failover` picks the server a
request goes to and the next one when it fails;
:mod:`.routing` matches one connection's replies to the callers waiting for
them, on top of :mod:`gearworker.transport`; :mod:`.admin` speaks the text
admin protocol; :mod:`.cli` is ``gearworker submit`` and ``gearworker status``.
"""

from ..errors import ServerRefused
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
from .results import JobStatus, Progress, Result

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
