"""Sans-IO codec for the Gearman binary protocol.

:class:`Parser` turns bytes, in chunks of any size, into :class:`Packet`
values; :func:`encode` turns a packet into bytes.  Neither does any I/O, so
both are tested by feeding bytes (whole, byte by byte, with trailing data)
and used unchanged by the asyncio adapters, the fake servers in the tests and
the benchmarks.
"""

from __future__ import annotations

import functools
import struct

from ..errors import LocalProtocolError, RemoteProtocolError
from .packets import ARG_COUNT, ARGUMENTS, HEADER_SIZE, Magic, Packet, PacketType, packet_type

__all__ = ["DEFAULT_MAX_PACKET_SIZE", "Parser", "encode", "encode_request"]

#: Default hard cap on one packet's payload.  A peer announcing more than this
#: is cut off before we buffer a byte of it, so a forged 4 GiB length header
#: costs nothing.  64 MiB leaves room for large photos.
DEFAULT_MAX_PACKET_SIZE = 64 * 1024 * 1024

_HEADER = struct.Struct(">4sII")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_REQ = Magic.REQ

# Packets up to this size are split with one bytes.split() on a copy of the
# payload: measured 5x faster than a find() and two copies per argument for a
# 100-byte JOB_ASSIGN_UNIQ.  Bigger ones are cut out argument by argument so a
# large workload is copied once, not twice.
_SPLIT_WHOLE = 64 * 1024

# Compact the receive buffer only once the consumed prefix is large: moving
# the unconsumed tail is then paid for by the bytes already consumed, which
# keeps parsing O(n) in the bytes received.
_COMPACT_AT = 64 * 1024


class Parser:
    """Incremental packet parser for one direction of one connection.

    ``expect`` is the magic the peer must send: :attr:`Magic.RES` for a
    client or worker reading from a job server, :attr:`Magic.REQ` for a
    server.  After a :class:`RemoteProtocolError` the stream is unusable and
    every further :meth:`feed` raises again: reset the connection.
    """

    __slots__ = ("_bare", "_buf", "_error", "_expect", "_magic", "_max", "_pos")

    def __init__(self, *, expect: Magic = Magic.RES, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        if max_packet_size < 0:
            raise ValueError("max_packet_size must be >= 0")
        self._buf = bytearray()
        self._pos = 0
        self._magic = expect.value
        self._expect = expect
        self._max = max_packet_size
        self._error: RemoteProtocolError | None = None
        self._bare = _bare_packets(expect)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as packets."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Add received bytes; return the packets they complete, in order."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        if not buf and type(data) is bytes:
            packet = self._whole(data)
            if packet is not None:
                return [packet]
        buf += data
        packets: list[Packet] = []
        try:
            self._pos = self._parse(buf, self._pos, packets)
        except RemoteProtocolError as e:
            self._error = e
            raise
        pos = self._pos
        if pos == len(buf):
            buf.clear()
            self._pos = 0
        elif pos >= _COMPACT_AT and pos * 2 >= len(buf):
            del buf[:pos]
            self._pos = 0
        return packets

    def _whole(self, data: bytes) -> Packet | None:
        """``data`` as the one small, valid packet it holds exactly; else None (the general path decides).

        A lone job arrives this way: one read, one packet, nothing buffered.
        Cut straight from the bytes read, with no copy into the buffer and no
        per-packet loop: a JOB_ASSIGN_UNIQ parses in 1.15 us instead of 1.57
        warm (timeit), with a call and two C calls fewer on a lone job's way
        to its handler (bench.calls), where the caches are cold.  Anything
        else (a batch, a partial packet, a packet that breaks a rule) returns
        None and goes the general way, which parses it, or raises, as before.
        """
        if len(data) < HEADER_SIZE:
            return None
        magic, number, size = _unpack_header(data)
        if size != len(data) - HEADER_SIZE or magic != self._magic or size > self._max or size > _SPLIT_WHOLE:
            return None
        ptype = _BY_NUMBER[number] if number < len(_BY_NUMBER) else None
        if ptype is None:
            return None
        count = ARG_COUNT[number]
        if count == 0:
            return self._bare[number] if size == 0 else None
        if count == 1:
            return Packet(ptype, (data[HEADER_SIZE:],), self._expect)
        args = data[HEADER_SIZE:].split(b"\x00", count - 1)
        return Packet(ptype, tuple(args), self._expect) if len(args) == count else None

    def _parse(self, buf: bytearray, pos: int, out: list[Packet]) -> int:
        end = len(buf)
        expect = self._magic
        # The member, looked up once: Magic(expect) per packet cost as much as building the Packet.
        member = self._expect
        while end - pos >= HEADER_SIZE:
            magic, number, size = _unpack_header(buf, pos)
            if magic != expect:
                raise RemoteProtocolError(f"bad magic {bytes(magic)!r} (expected {expect!r})")
            # packet_type(number), inlined: a call costs more than the lookup on a cold path.
            ptype = _BY_NUMBER[number] if number < len(_BY_NUMBER) else None
            if ptype is None:
                raise RemoteProtocolError(f"unknown packet type {number}")
            if size > self._max:
                raise RemoteProtocolError(f"{ptype.name} of {size} bytes exceeds the {self._max} byte limit")
            start = pos + HEADER_SIZE
            stop = start + size
            if stop > end:
                break  # wait for the rest of the payload
            bare = self._bare[number]
            if bare is not None and stop == start:
                out.append(bare)  # NOOP, NO_JOB: always the same value, so made once
            else:
                out.append(Packet(ptype, _split(buf, start, stop, ARG_COUNT[number], ptype), member))
            pos = stop
        return pos


#: Each number's PacketType, or None where no type has that number.
_BY_NUMBER = tuple(packet_type(number) for number in range(len(ARG_COUNT)))


@functools.cache
def _bare_packets(magic: Magic) -> list[Packet | None]:
    """The packet of each type that takes no arguments, travelling as ``magic``, by type number.

    Packets are immutable, so the parser hands out these instead of building
    equal ones: a frozen dataclass takes 0.7 us to build, and an idle worker
    is woken by a NOOP for every job.
    """
    bare: list[Packet | None] = [None] * len(ARG_COUNT)
    for ptype in PacketType:
        if ARG_COUNT[ptype] == 0:
            bare[ptype] = Packet(ptype, (), magic)
    return bare


def _split(buf: bytearray, start: int, stop: int, count: int, ptype: PacketType) -> tuple[bytes, ...]:
    """Cut ``count`` arguments out of ``buf[start:stop]``, copying each once."""
    if count == 0:
        if stop != start:
            raise RemoteProtocolError(f"{ptype.name} takes no arguments but carries {stop - start} bytes")
        return ()
    if count == 1:
        return (bytes(buf[start:stop]),)
    if stop - start <= _SPLIT_WHOLE:
        parts = bytes(buf[start:stop]).split(b"\x00", count - 1)
        if len(parts) != count:
            raise RemoteProtocolError(f"{ptype.name} needs {count} arguments, got {len(parts)}")
        return tuple(parts)
    args: list[bytes] = []
    for _ in range(count - 1):
        nul = buf.find(0, start, stop)
        if nul < 0:
            raise RemoteProtocolError(f"{ptype.name} needs {count} arguments, got {len(args) + 1}")
        args.append(bytes(buf[start:nul]))
        start = nul + 1
    with memoryview(buf) as view:  # the big last argument: one copy, not two
        args.append(bytes(view[start:stop]))
    return tuple(args)


def encode(packet: Packet) -> bytes:
    """Return the wire bytes of ``packet``.

    Raises :class:`LocalProtocolError` for a wrong number of arguments or a NUL
    inside an argument other than the last, which would shift every argument
    after it on the wire.
    """
    return _encode(packet.magic, packet.type, packet.args)


def encode_request(type: PacketType, *args: bytes) -> bytes:
    """Same as ``encode(Packet(type, args, Magic.REQ))``, without building the Packet.

    The worker calls this once per job (WORK_COMPLETE): skipping the frozen
    dataclass halved its cost.
    """
    return _encode(Magic.REQ, type, args)


def encode_handle_data(type: PacketType, handle: bytes, data: bytes) -> bytes:
    """Same as ``encode_request(type, handle, data)`` for a ``handle`` that a server sent, without the checks.

    A handle is cut out of the server's packet at a NUL, so it holds none, and
    the last argument may hold anything: there is nothing to check.  The
    worker encodes a WORK_COMPLETE per job this way: 1.41 -> 0.24 us (timeit),
    on the path from a job's arrival to its result.
    """
    return b"".join((_pack_header(_REQ, type, len(handle) + 1 + len(data)), handle, b"\x00", data))


def _encode(magic: Magic, type: PacketType, args: tuple[bytes, ...]) -> bytes:
    count = ARG_COUNT[type]
    if len(args) != count:
        names = ", ".join(ARGUMENTS[type]) or "none"
        raise LocalProtocolError(f"{type.name} takes {count} arguments ({names}), got {len(args)}")
    if count == 0:
        return _pack_header(magic, type, 0)
    for arg in args[:-1]:
        if 0 in arg:
            raise LocalProtocolError(f"{type.name}: NUL byte inside argument {arg!r}")
    size = sum(map(len, args)) + count - 1
    # Magic is a bytes subclass and PacketType an int one, so struct takes the
    # members as they are (.value through the enum property cost more than the
    # pack).  Gluing the header to the first argument and joining once copies a
    # large last argument once, not twice.
    return b"\x00".join((_pack_header(magic, type, size) + args[0], *args[1:]))
