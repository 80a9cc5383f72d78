"""What the client hands back: a job's :class:`Result`, its :class:`Progress` reports, its :class:`JobStatus`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["JobStatus", "Progress", "ProgressKind", "Result"]

#: The kinds of progress report a running foreground job sends.
ProgressKind = Literal["status", "data", "warning"]


class Result(bytes):
    """A job's result: the bytes the worker sent, with helpers to decode them."""

    def json(self) -> Any:
        """Decode the result as JSON."""
        import json

        return json.loads(self)

    def text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Decode the result as text (UTF-8 unless told otherwise)."""
        return self.decode(encoding, errors)


@dataclass(frozen=True, slots=True)
class Progress:
    """A WORK_STATUS, WORK_DATA or WORK_WARNING received while a foreground job runs.

    ``numerator``/``denominator`` are set for ``"status"`` (0 otherwise);
    ``data`` is set for ``"data"`` and ``"warning"`` (empty otherwise).
    """

    kind: ProgressKind
    numerator: int = 0
    denominator: int = 0
    data: bytes = b""
    handle: bytes = b""

    @property
    def fraction(self) -> float | None:
        """``numerator / denominator`` for a status report, else None."""
        if self.kind != "status" or self.denominator <= 0:
            return None
        return self.numerator / self.denominator


@dataclass(frozen=True, slots=True)
class JobStatus:
    """The answer to GET_STATUS (or GET_STATUS_UNIQUE, which also fills ``waiting``)."""

    known: bool
    running: bool
    numerator: int
    denominator: int
    waiting: int | None = None  # clients waiting on the job (status by unique id only)
