"""The job object a handler receives.

Async handlers (``async def``) get a :class:`Job` and report progress with
``await job.status(n, d)``.  Plain ``def`` handlers get a :class:`CpuJob`,
whose reporting methods are plain calls: in a pool process (``cpu=True``) the
child sends each report to the parent, in a thread (without ``cpu=True``) it
is handed to the event loop; either way the job server gets the reports in
order, before the job's result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..payload import to_bytes

__all__ = ["CpuJob", "CpuJobSpec", "Job", "Reporter"]

#: Where a job's progress goes: ("status", (numerator, denominator)), ("data", (bytes,)) or ("warning", (bytes,)).
Reporter = Callable[[str, tuple[bytes, ...]], None]


class _JobData:
    """What every job carries, on either side of the pool."""

    __slots__ = ("function", "handle", "unique", "workload")

    function: str
    handle: bytes
    unique: bytes
    workload: bytes

    def json(self) -> Any:
        """Decode the workload as JSON."""
        return json.loads(self.workload)

    def text(self, encoding: str = "utf-8") -> str:
        """Decode the workload as text."""
        return self.workload.decode(encoding)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} {self.function} {self.handle!r} unique={self.unique!r} {len(self.workload)} bytes>"


class Job(_JobData):
    """A job as seen by an async handler running on the event loop."""

    __slots__ = ("_report",)

    def __init__(self, function: str, handle: bytes, unique: bytes, workload: bytes, report: Reporter) -> None:
        self.function = function
        self.handle = handle
        self.unique = unique
        self.workload = workload
        self._report = report

    async def status(self, numerator: int, denominator: int) -> None:
        """Report progress (WORK_STATUS): ``numerator`` out of ``denominator``."""
        self._report("status", (str(int(numerator)).encode(), str(int(denominator)).encode()))

    async def send_data(self, data: object) -> None:
        """Send partial data to the client (WORK_DATA)."""
        self._report("data", (to_bytes(data),))

    async def warning(self, message: object) -> None:
        """Send a warning to the client (WORK_WARNING)."""
        self._report("warning", (to_bytes(message),))


@dataclass(frozen=True, slots=True)
class CpuJobSpec:
    """What the parent sends to a pool process to run one job (picklable)."""

    token: int
    function: str
    handle: bytes
    unique: bytes
    workload: bytes
    #: The workload's length when it waits in the slot's mailbox instead
    #: (``workload`` is then empty); -1 when it travels in ``workload``.
    mailbox: int = -1


class CpuJob(_JobData):
    """A job as seen by a plain ``def`` handler: in a pool process (``cpu=True``) or in a thread.

    Its reporting methods are synchronous: the handler is plain blocking code.
    """

    __slots__ = ("_send",)

    def __init__(self, spec: CpuJobSpec, send: Reporter) -> None:
        self.function = spec.function
        self.handle = spec.handle
        self.unique = spec.unique
        self.workload = spec.workload
        self._send = send

    def status(self, numerator: int, denominator: int) -> None:
        """Report progress (WORK_STATUS)."""
        self._send("status", (str(int(numerator)).encode(), str(int(denominator)).encode()))

    def send_data(self, data: object) -> None:
        """Send partial data to the client (WORK_DATA)."""
        self._send("data", (to_bytes(data),))

    def warning(self, message: object) -> None:
        """Send a warning to the client (WORK_WARNING)."""
        self._send("warning", (to_bytes(message),))
