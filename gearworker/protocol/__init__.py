"""The Gearman protocol, sans-IO: bytes in, packets out, and back.

This package imports no asyncio and does no I/O.  See :class:`Parser`,
:func:`encode`, the worker's connection state in :class:`WorkerSession`
and, for the text admin protocol, :mod:`.admin`.
"""

from .admin import AdminParser, AdminResponse, ShowJobsRow, StatusRow, WorkerRow, encode_admin
from .codec import DEFAULT_MAX_PACKET_SIZE, Parser, encode, encode_request
from .packets import ARGUMENTS, HEADER_SIZE, Magic, Packet, PacketType, request, response
from .worker_session import JobAssigned, NoJob, ServerError, Woken, WorkerSession, registration

__all__ = [
    "ARGUMENTS",
    "DEFAULT_MAX_PACKET_SIZE",
    "HEADER_SIZE",
    "AdminParser",
    "AdminResponse",
    "JobAssigned",
    "Magic",
    "NoJob",
    "Packet",
    "PacketType",
    "Parser",
    "ServerError",
    "ShowJobsRow",
    "StatusRow",
    "Woken",
    "WorkerRow",
    "WorkerSession",
    "encode",
    "encode_admin",
    "encode_request",
    "registration",
    "request",
    "response",
]
