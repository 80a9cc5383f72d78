"""Gearman binary packets: types, argument layouts and the packet value.

See gearmand's ``PROTOCOL`` file.  A packet is a 12-byte header (magic
``\\0REQ`` or ``\\0RES``, a big-endian packet type and a big-endian payload
size) followed by the payload: NUL-separated arguments, the last of which is
raw bytes and may itself contain NULs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ARGUMENTS",
    "ARG_COUNT",
    "HEADER_SIZE",
    "Magic",
    "Packet",
    "PacketType",
    "packet_type",
    "request",
    "response",
]

HEADER_SIZE = 12


class Magic(bytes, enum.Enum):
    """Which way a packet travels."""

    REQ = b"\x00REQ"  # to the job server
    RES = b"\x00RES"  # from the job server


class PacketType(enum.IntEnum):
    """Every packet type of the binary protocol, numbered as on the wire."""

    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


_T = PacketType

#: Names of each packet type's arguments, in wire order.  The number of names
#: is the number of arguments; the last one takes the rest of the payload.
ARGUMENTS: dict[PacketType, tuple[str, ...]] = {
    _T.CAN_DO: ("function",),
    _T.CANT_DO: ("function",),
    _T.RESET_ABILITIES: (),
    _T.PRE_SLEEP: (),
    _T.NOOP: (),
    _T.SUBMIT_JOB: ("function", "unique", "data"),
    _T.JOB_CREATED: ("handle",),
    _T.GRAB_JOB: (),
    _T.NO_JOB: (),
    _T.JOB_ASSIGN: ("handle", "function", "data"),
    _T.WORK_STATUS: ("handle", "numerator", "denominator"),
    _T.WORK_COMPLETE: ("handle", "data"),
    _T.WORK_FAIL: ("handle",),
    _T.GET_STATUS: ("handle",),
    _T.ECHO_REQ: ("data",),
    _T.ECHO_RES: ("data",),
    _T.SUBMIT_JOB_BG: ("function", "unique", "data"),
    _T.ERROR: ("code", "text"),
    _T.STATUS_RES: ("handle", "known", "running", "numerator", "denominator"),
    _T.SUBMIT_JOB_HIGH: ("function", "unique", "data"),
    _T.SET_CLIENT_ID: ("client_id",),
    _T.CAN_DO_TIMEOUT: ("function", "timeout"),
    _T.ALL_YOURS: (),
    _T.WORK_EXCEPTION: ("handle", "data"),
    _T.OPTION_REQ: ("option",),
    _T.OPTION_RES: ("option",),
    _T.WORK_DATA: ("handle", "data"),
    _T.WORK_WARNING: ("handle", "data"),
    _T.GRAB_JOB_UNIQ: (),
    # WorkerSession builds its JobAssigned event from these four arguments as they are, in this
    # order (the per-job fast path): change them together.
    _T.JOB_ASSIGN_UNIQ: ("handle", "function", "unique", "data"),
    _T.SUBMIT_JOB_HIGH_BG: ("function", "unique", "data"),
    _T.SUBMIT_JOB_LOW: ("function", "unique", "data"),
    _T.SUBMIT_JOB_LOW_BG: ("function", "unique", "data"),
    _T.SUBMIT_JOB_SCHED: ("function", "unique", "minute", "hour", "day", "month", "weekday", "data"),
    _T.SUBMIT_JOB_EPOCH: ("function", "unique", "epoch", "data"),
    _T.SUBMIT_REDUCE_JOB: ("function", "unique", "reducer", "data"),
    _T.SUBMIT_REDUCE_JOB_BACKGROUND: ("function", "unique", "reducer", "data"),
    _T.GRAB_JOB_ALL: (),
    _T.JOB_ASSIGN_ALL: ("handle", "function", "unique", "reducer", "data"),
    _T.GET_STATUS_UNIQUE: ("unique",),
    _T.STATUS_RES_UNIQUE: ("unique", "known", "running", "numerator", "denominator", "waiting"),
}

#: Number of arguments of each packet type, indexed by the type's number, for
#: the parser's hot path (a list index is cheaper than an enum dict lookup).
ARG_COUNT: list[int] = [-1] * (max(PacketType) + 1)
for _type, _names in ARGUMENTS.items():
    ARG_COUNT[_type] = len(_names)

_TYPES: list[PacketType | None] = [None] * (max(PacketType) + 1)
for _type in PacketType:
    _TYPES[_type] = _type


def packet_type(number: int) -> PacketType | None:
    """Return the :class:`PacketType` numbered ``number``, or None if unknown."""
    if 0 <= number < len(_TYPES):
        return _TYPES[number]
    return None


@dataclass(frozen=True, slots=True)
class Packet:
    """One binary packet.

    ``args`` holds the arguments as bytes, never decoded: function names,
    handles and unique ids are bytes on the wire and stay bytes here.
    """

    type: PacketType
    args: tuple[bytes, ...] = ()
    magic: Magic = Magic.REQ

    def __repr__(self) -> str:  # short: a 10 MB workload must not flood a log
        shown = ", ".join(repr(a) if len(a) <= 40 else f"<{len(a)} bytes>" for a in self.args)
        return f"Packet({self.magic.name} {self.type.name}({shown}))"

    def arg(self, name: str) -> bytes:
        """Return the argument called ``name`` (see :data:`ARGUMENTS`)."""
        return self.args[ARGUMENTS[self.type].index(name)]


def request(type: PacketType, *args: bytes) -> Packet:
    """Build a request packet (client or worker to job server)."""
    return Packet(type, args, Magic.REQ)


def response(type: PacketType, *args: bytes) -> Packet:
    """Build a response packet (job server to client or worker)."""
    return Packet(type, args, Magic.RES)
