"""Property tests of the sans-IO parser against hostile and broken input.

Whatever bytes a peer sends, in whatever chunks: the parser either returns
packets or raises :class:`RemoteProtocolError` (nothing else, so the adapter
can reset just that connection), never holds more than one packet's worth
(``max_packet_size`` + header) between feeds, and a valid stream parses to
the same packets however it is split.  The fake-server cases against a real
worker process (garbage, 4 GiB header, unknown types, NOOP floods, jobs for
unregistered functions, closing mid-packet) are in tests/test_fake_peer.py.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gearworker.errors import RemoteProtocolError
from gearworker.protocol import ARGUMENTS, HEADER_SIZE, Magic, Packet, PacketType, Parser, encode

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = struct.Struct(">4sII")


@st.composite
def packets(draw: st.DrawFn, magic: Magic = Magic.RES) -> Packet:
    ptype = draw(st.sampled_from(list(PacketType)))
    count = len(ARGUMENTS[ptype])
    # Only the last argument may hold NULs (it is raw data); the others are NUL-free.
    head = [draw(st.binary(max_size=24).map(lambda b: b.replace(b"\0", b"x"))) for _ in range(max(0, count - 1))]
    tail = [draw(st.binary(max_size=300))] if count else []
    return Packet(ptype, tuple(head + tail), magic)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(len(data), c) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def feed_all(parser: Parser, chunks: list[bytes], limit: int) -> list[Packet]:
    """Feed chunk by chunk; only RemoteProtocolError may escape; check the buffer bound after each feed."""
    out: list[Packet] = []
    for chunk in chunks:
        out += parser.feed(chunk)
        assert parser.buffered <= limit + HEADER_SIZE
    return out


@SETTINGS
@given(
    data=st.binary(max_size=4096),
    cuts=st.lists(st.integers(0, 4096), max_size=20),
    limit=st.integers(0, 2048),
    magic=st.sampled_from(list(Magic)),
)
def test_random_bytes_give_packets_or_a_remote_protocol_error_and_bounded_buffer(
    data: bytes, cuts: list[int], limit: int, magic: Magic
) -> None:
    """Random bytes in random chunks: packets or RemoteProtocolError, nothing else; buffer <= max + header."""
    parser = Parser(expect=magic, max_packet_size=limit)
    try:
        feed_all(parser, splits(data, cuts), limit)
    except RemoteProtocolError:
        with pytest.raises(RemoteProtocolError):  # a failed stream stays failed: the connection must be reset
            parser.feed(b"")


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    stream = bytearray(b"".join(encode(p) for p in draw(st.lists(packets(), min_size=1, max_size=8))))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "length", "type"]))
        pos = draw(st.integers(0, max(0, len(stream) - 1)))
        if kind == "flip" and stream:
            stream[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            stream[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del stream[pos : pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del stream[pos:]
        elif kind == "length" and len(stream) >= HEADER_SIZE:
            # a forged size: 0, tiny, just over a limit, or 4 GiB
            size = draw(st.sampled_from([0, 1, 4097, 0x7FFFFFFF, 0xFFFFFFFF]))
            stream[8:12] = struct.pack(">I", size)
        elif kind == "type" and len(stream) >= HEADER_SIZE:
            stream[4:8] = struct.pack(">I", draw(st.sampled_from([0, 5, 43, 255, 0xFFFFFFFF])))
    return bytes(stream)


@SETTINGS
@given(stream=mutated_streams(), cuts=st.lists(st.integers(0, 8192), max_size=20), limit=st.integers(0, 4096))
def test_mutated_valid_streams_give_packets_or_a_remote_protocol_error(
    stream: bytes, cuts: list[int], limit: int
) -> None:
    """Valid packets with flipped, inserted, deleted bytes, forged sizes and types: never another exception,
    never more than max + header buffered."""
    parser = Parser(expect=Magic.RES, max_packet_size=limit)
    try:
        for packet in feed_all(parser, splits(stream, cuts), limit):
            assert len(packet.args) == len(ARGUMENTS[packet.type])
    except RemoteProtocolError:
        pass


@SETTINGS
@given(items=st.lists(packets(), max_size=12), cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_valid_stream_split_anywhere_parses_to_the_same_packets(items: list[Packet], cuts: list[int]) -> None:
    """A valid stream, cut at any points, gives exactly the packets that were encoded, and nothing left over."""
    stream = b"".join(encode(p) for p in items)
    parser = Parser(expect=Magic.RES)
    assert feed_all(parser, splits(stream, cuts), 64 * 1024 * 1024) == items
    assert parser.buffered == 0


@SETTINGS
@given(limit=st.integers(0, 1 << 20), size=st.integers(0, 0xFFFFFFFF))
def test_size_over_the_limit_is_rejected_from_the_header_alone(limit: int, size: int) -> None:
    """A header announcing more than max_packet_size is refused before any of its payload is buffered."""
    parser = Parser(expect=Magic.RES, max_packet_size=limit)
    header = HEADER.pack(Magic.RES.value, PacketType.ECHO_RES, size)  # one raw argument: any size is well-formed
    if size > limit:
        with pytest.raises(RemoteProtocolError, match="exceeds"):
            parser.feed(header)
    else:
        assert len(parser.feed(header)) == (1 if size == 0 else 0)
        assert parser.buffered <= HEADER_SIZE


def test_noop_flood_parses_in_linear_time_and_constant_buffer() -> None:
    """A million NOOPs in 64 KiB chunks: every one is returned and the buffer never grows past a chunk."""
    noop = encode(Packet(PacketType.NOOP, (), Magic.RES))
    chunk = noop * (65536 // len(noop))
    parser = Parser(expect=Magic.RES, max_packet_size=0)
    total = 0
    for _ in range(1_000_000 // (65536 // len(noop))):
        total += len(parser.feed(chunk))
        assert parser.buffered == 0
    assert total == (1_000_000 // (65536 // len(noop))) * (65536 // len(noop))
