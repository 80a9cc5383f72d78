"""gearworker.payload: the one encoding rule for results and payloads, to_int's tolerance, ResultError."""

from __future__ import annotations

import json

import pytest

from gearworker.errors import GearworkerError
from gearworker.payload import ResultError, to_bytes, to_int


def test_bytes_go_as_they_are_without_a_copy() -> None:
    """A bytes value is returned as the same object (large results are not copied)."""
    data = b"\x00\xff" * 1000
    assert to_bytes(data) is data


@pytest.mark.parametrize("value", [bytearray(b"ab\x00c"), memoryview(b"ab\x00c")])
def test_other_bytes_like_values_become_bytes(value: bytearray | memoryview) -> None:
    """bytearray and memoryview are sent as their bytes, not as JSON."""
    result = to_bytes(value)
    assert type(result) is bytes
    assert result == b"ab\x00c"


def test_a_memoryview_slice_sends_only_its_slice() -> None:
    """A memoryview of part of a buffer sends that part."""
    assert to_bytes(memoryview(b"0123456789")[2:5]) == b"234"


def test_str_is_utf8() -> None:
    """Text is encoded as UTF-8, not JSON-quoted."""
    assert to_bytes("héllo ✓") == "héllo ✓".encode()
    assert to_bytes("") == b""


def test_none_is_empty() -> None:
    """A handler returning nothing sends an empty result."""
    assert to_bytes(None) == b""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": 1, "b": [1, 2]}, b'{"a":1,"b":[1,2]}'),
        ([1, "x", None], b'[1,"x",null]'),
        (0, b"0"),  # falsy but not None: still sent
        (3.5, b"3.5"),
        (True, b"true"),
        (False, b"false"),
        ((1, 2), b"[1,2]"),
        ({"é": "✓"}, b'{"\\u00e9":"\\u2713"}'),  # ASCII-safe JSON
    ],
)
def test_anything_else_is_compact_json(value: object, expected: bytes) -> None:
    """Other values are JSON without spaces after separators."""
    assert to_bytes(value) == expected
    assert json.loads(to_bytes(value)) == json.loads(expected)


def test_a_value_that_is_not_json_serialisable_raises_result_error_naming_its_type() -> None:
    """ResultError says the type and why, and chains the TypeError from json."""
    with pytest.raises(ResultError) as info:
        to_bytes({"when": object()})
    message = str(info.value)
    assert message.startswith("result of type dict is not bytes, str or JSON-serialisable: ")
    assert "object is not JSON serializable" in message
    assert isinstance(info.value.__cause__, TypeError)


def test_a_circular_structure_raises_result_error_chained_from_value_error() -> None:
    """json's ValueError (circular reference) is turned into ResultError too."""
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ResultError, match=r"^result of type list is not bytes") as info:
        to_bytes(loop)
    assert isinstance(info.value.__cause__, ValueError)


def test_result_error_is_a_gearworker_error() -> None:
    """Callers catching GearworkerError also catch ResultError."""
    assert issubclass(ResultError, GearworkerError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"42", 42), (b"0", 0), (b"-3", -3), (b" 7 ", 7), (b"007", 7), (b"", 0)],
)
def test_to_int_reads_decimal_text(value: bytes, expected: int) -> None:
    """WORK_STATUS / STATUS_RES numbers are decimal text; empty reads as 0."""
    assert to_int(value) == expected


@pytest.mark.parametrize("value", [b"junk", b"1.5", b"0x10", b"\xff\xfe", b"12abc"])
def test_to_int_reads_garbage_as_zero(value: bytes) -> None:
    """A peer sending junk in a numeric field does not crash the reader: it reads 0."""
    assert to_int(value) == 0
