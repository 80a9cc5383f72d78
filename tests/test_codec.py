"""The sans-IO codec: bytes in any chunking give the same packets; bad bytes are remote errors."""

from __future__ import annotations

import struct
from typing import Any, cast

import pytest

from gearworker.errors import LocalProtocolError, RemoteProtocolError
from gearworker.protocol import (
    ARGUMENTS,
    AdminParser,
    Magic,
    Packet,
    PacketType,
    Parser,
    StatusRow,
    WorkerRow,
    encode,
    encode_admin,
    encode_request,
    request,
    response,
)
from gearworker.protocol.codec import encode_handle_data

T = PacketType
BINARY = bytes(range(256)) * 4  # every byte value, NUL included

SAMPLES = [
    response(T.NOOP),
    response(T.NO_JOB),
    response(T.JOB_ASSIGN_UNIQ, b"H:host:1", b"resize", b"unique-1", BINARY),
    response(T.JOB_ASSIGN, b"H:host:2", b"echo", b""),
    response(T.JOB_ASSIGN_ALL, b"H:host:3", b"echo", b"u", b"reducer", b"data\x00with\x00nuls"),
    response(T.WORK_COMPLETE, b"H:host:1", BINARY),
    response(T.WORK_STATUS, b"H:host:1", b"1", b"4"),
    response(T.STATUS_RES, b"H:host:1", b"1", b"0", b"0", b"0"),
    response(T.STATUS_RES_UNIQUE, b"u", b"1", b"1", b"2", b"4", b"1"),
    response(T.ERROR, b"JOB_NOT_FOUND", b"Job given in work result not found"),
    response(T.JOB_CREATED, b"H:host:9"),
    response(T.ECHO_RES, b""),
]


def stream() -> bytes:
    return b"".join(encode(p) for p in SAMPLES)


def test_every_packet_type_has_an_argument_layout() -> None:
    assert set(ARGUMENTS) == set(PacketType)


@pytest.mark.parametrize("packet", SAMPLES, ids=lambda p: p.type.name)
def test_encode_then_parse_round_trips(packet: Packet) -> None:
    assert Parser().feed(encode(packet)) == [packet]


def test_header_is_magic_type_size_big_endian() -> None:
    data = encode(request(T.CAN_DO, b"echo"))
    assert data == b"\x00REQ" + struct.pack(">II", 1, 4) + b"echo"


def test_arguments_are_nul_separated_and_the_last_is_raw() -> None:
    data = encode(request(T.SUBMIT_JOB, b"f", b"u", b"a\x00b"))
    assert data[12:] == b"f\x00u\x00a\x00b"


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("packet", SAMPLES, ids=lambda p: p.type.name)
def test_one_whole_packet_per_read_parses_to_bytes_arguments_however_it_is_fed(kind: type, packet: Packet) -> None:
    """A read holding exactly one packet (the short way, for bytes) gives what the general path gives."""
    parser = Parser()
    (got,) = parser.feed(kind(encode(packet)))
    assert got == packet
    assert all(type(arg) is bytes for arg in got.args)
    assert parser.buffered == 0


def test_whole_stream_parses_in_one_feed() -> None:
    assert Parser().feed(stream()) == SAMPLES


def test_stream_fed_byte_by_byte_gives_the_same_packets() -> None:
    parser = Parser()
    got: list[Packet] = []
    for i, byte in enumerate(stream()):
        got += parser.feed(bytes([byte]))
        assert parser.buffered <= i + 1
    assert got == SAMPLES
    assert parser.buffered == 0


def test_trailing_partial_packet_is_kept_for_the_next_feed() -> None:
    whole = encode(SAMPLES[2])
    parser = Parser()
    assert parser.feed(stream() + whole[:20]) == SAMPLES
    assert parser.buffered == 20
    assert parser.feed(whole[20:]) == [SAMPLES[2]]


def test_large_payload_in_many_chunks_is_assembled_once() -> None:
    payload = bytes(range(256)) * 40_000  # 10 MB
    data = encode(response(T.WORK_COMPLETE, b"H:1", payload))
    parser = Parser()
    out: list[Packet] = []
    for i in range(0, len(data), 65536):
        out += parser.feed(data[i : i + 65536])
    assert len(out) == 1
    assert out[0].args == (b"H:1", payload)


def test_bad_magic_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="bad magic"):
        Parser().feed(b"\x00REQ" + struct.pack(">II", 6, 0))


def test_text_instead_of_binary_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError):
        Parser().feed(b"ERR UNKNOWN_COMMAND x\r\n")


def test_unknown_packet_type_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown packet type 99"):
        Parser().feed(b"\x00RES" + struct.pack(">II", 99, 0))


def test_oversize_header_is_rejected_before_buffering_the_payload() -> None:
    parser = Parser(max_packet_size=1024)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        parser.feed(b"\x00RES" + struct.pack(">II", 13, 0xFFFFFFFF) + b"x" * 100)


def test_parser_stays_failed_after_a_protocol_error() -> None:
    parser = Parser()
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"garbage-garbage")
    with pytest.raises(RemoteProtocolError):
        parser.feed(encode(response(T.NOOP)))


def test_missing_arguments_are_a_remote_error() -> None:
    body = b"H:1"  # JOB_ASSIGN_UNIQ needs four arguments
    with pytest.raises(RemoteProtocolError, match="needs 4 arguments"):
        Parser().feed(b"\x00RES" + struct.pack(">II", 31, len(body)) + body)


def test_payload_on_a_packet_without_arguments_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="takes no arguments"):
        Parser().feed(b"\x00RES" + struct.pack(">II", 6, 3) + b"abc")


def test_server_side_parser_reads_requests() -> None:
    packet = request(T.GRAB_JOB_UNIQ)
    assert Parser(expect=Magic.REQ).feed(encode(packet)) == [packet]


def test_encode_rejects_wrong_argument_count() -> None:
    with pytest.raises(LocalProtocolError, match="takes 3 arguments"):
        encode(request(T.SUBMIT_JOB, b"f", b"data"))


def test_encode_rejects_nul_inside_a_non_final_argument() -> None:
    with pytest.raises(LocalProtocolError, match="NUL"):
        encode(request(T.SUBMIT_JOB, b"f\x00g", b"u", b"data"))


@pytest.mark.parametrize("data", [b"", b"ok", BINARY, b"\x00" * 70_000])
@pytest.mark.parametrize("type_", [T.WORK_COMPLETE, T.WORK_EXCEPTION, T.WORK_DATA, T.WORK_WARNING])
def test_encode_handle_data_writes_what_encode_request_writes(type_: PacketType, data: bytes) -> None:
    """The worker's unchecked encoder for a result to a server-sent handle gives the same bytes as the checked one."""
    assert encode_handle_data(type_, b"H:host:123", data) == encode_request(type_, b"H:host:123", data)


def test_packets_without_arguments_are_shared_values_equal_to_fresh_ones() -> None:
    """NOOP and NO_JOB are parsed to one prebuilt value each (they cannot change), equal to what encode() takes."""
    parser = Parser(expect=Magic.RES)
    first, second, third = parser.feed(encode(response(T.NOOP)) * 2 + encode(response(T.NO_JOB)))
    assert first is second and first == response(T.NOOP)
    assert third == response(T.NO_JOB)
    assert Parser(expect=Magic.REQ).feed(encode(request(T.PRE_SLEEP))) == [request(T.PRE_SLEEP)]


def test_packets_are_frozen() -> None:
    packet = response(T.NOOP)
    with pytest.raises(AttributeError):
        cast(Any, packet).type = T.NO_JOB  # what mypy refuses, refused at run time too


def test_repr_does_not_dump_large_payloads() -> None:
    assert "<1024 bytes>" in repr(response(T.WORK_COMPLETE, b"H:1", BINARY))


# -- text admin protocol -------------------------------------------------------


def test_admin_status_and_workers_rows_are_parsed() -> None:
    admin = AdminParser()
    admin.sent("status")
    admin.sent("workers")
    admin.sent("version")
    data = b"echo\t0\t1\t2\nfoo bar\t3\t0\t0\n.\n38 127.0.0.1 host-1 : echo reverse\n39 ::1 - :\n.\nOK 1.1.20+ds\n"
    answers = []
    for byte in data:  # byte by byte: lines and lists may arrive split anywhere
        answers += admin.feed(bytes([byte]))
    status, workers, version = answers
    assert [StatusRow.parse(r) for r in status.lines] == [StatusRow("echo", 0, 1, 2), StatusRow("foo bar", 3, 0, 0)]
    assert [WorkerRow.parse(r) for r in workers.lines] == [
        WorkerRow(38, "127.0.0.1", "host-1", ("echo", "reverse")),
        WorkerRow(39, "::1", "-", ()),
    ]
    assert version.ok and version.text == "1.1.20+ds"


def test_admin_error_and_crlf_answers() -> None:
    admin = AdminParser()
    admin.sent("maxqueue echo 5")
    admin.sent("bogus")
    ok, err = admin.feed(b"OK\r\nERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n")
    assert ok.ok and ok.command == "maxqueue"
    assert not err.ok and err.text.startswith("UNKNOWN_COMMAND")


def test_admin_empty_list() -> None:
    admin = AdminParser()
    admin.sent("show jobs")
    (answer,) = admin.feed(b".\n")
    assert answer.ok and answer.lines == ()


def test_admin_unsolicited_line_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError):
        AdminParser().feed(b"OK\n")


def test_encode_admin_refuses_line_breaks() -> None:
    assert encode_admin("maxqueue", "resize", "10") == b"maxqueue resize 10\n"
    with pytest.raises(LocalProtocolError):
        encode_admin("status\nshutdown")
