"""Payload encoding shared by both sides: what a handler returns and what a client submits.

One rule everywhere: bytes-like values go as they are, ``str`` as UTF-8,
``None`` as empty, anything else as compact JSON.
"""

from __future__ import annotations

import json

from .errors import GearworkerError

__all__ = ["ResultError", "to_bytes", "to_int"]


class ResultError(GearworkerError):
    """A value cannot be sent as a payload or result (not bytes, str or JSON)."""


def to_bytes(value: object) -> bytes:
    """Turn a handler's return value (or a client's payload) into bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if value is None:
        return b""
    try:
        return json.dumps(value, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise ResultError(f"result of type {type(value).__name__} is not bytes, str or JSON-serialisable: {e}") from e


def to_int(value: bytes) -> int:
    """A numeric protocol argument (WORK_STATUS, STATUS_RES) as int; garbage reads as 0.

    Peers send these as decimal text; a server or worker that sends junk must
    not crash the reader of a progress bar.
    """
    try:
        return int(value or b"0")
    except ValueError:
        return 0
