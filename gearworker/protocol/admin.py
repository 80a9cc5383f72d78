"""Sans-IO codec for gearmand's text admin protocol.

Commands are lines (``status\\n``); answers are either one line (``OK 1.1.20``,
``ERR CODE text``) or a list of lines closed by a line holding a single dot.
Which one depends on the command, so :class:`AdminParser` is told each command
as it is sent and pairs answers with commands in order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = ["AdminParser", "AdminResponse", "ShowJobsRow", "StatusRow", "WorkerRow", "encode_admin"]

#: Commands answered by a list of lines ending with ``.``.
_MULTILINE = frozenset({"status", "workers", "show jobs", "show unique jobs"})
_KNOWN = _MULTILINE | {"version", "getpid", "maxqueue", "shutdown", "verbose", "cancel job"}
_MAX_LINE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AdminResponse:
    """The answer to one admin command."""

    command: str
    ok: bool
    lines: tuple[str, ...]  # the list's rows, or the single line's text after OK/ERR

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True, slots=True)
class StatusRow:
    """A row of ``status``: one function on one server."""

    function: str
    queued: int
    running: int
    workers: int

    @classmethod
    def parse(cls, line: str) -> StatusRow:
        try:
            function, queued, running, workers = line.rsplit("\t", 3)
            return cls(function, int(queued), int(running), int(workers))
        except ValueError as e:
            raise RemoteProtocolError(f"bad status row {line!r}") from e


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A row of ``workers``: one connection (worker or client) to a server."""

    fd: int
    address: str
    client_id: str
    functions: tuple[str, ...]

    @classmethod
    def parse(cls, line: str) -> WorkerRow:
        # "FD IP CLIENT-ID : FUNCTION ..."; the IP may itself hold colons (::1).
        tokens = line.split()
        if len(tokens) < 4 or tokens[3] != ":":
            raise RemoteProtocolError(f"bad workers row {line!r}")
        try:
            fd = int(tokens[0])
        except ValueError as e:
            raise RemoteProtocolError(f"bad workers row {line!r}") from e
        return cls(fd, tokens[1], tokens[2], tuple(tokens[4:]))


@dataclass(frozen=True, slots=True)
class ShowJobsRow:
    """A row of ``show jobs``."""

    handle: str
    retries: int
    ignore_job: int
    job_queued: int

    @classmethod
    def parse(cls, line: str) -> ShowJobsRow:
        try:
            handle, retries, ignore, queued = line.split("\t")
            return cls(handle, int(retries), int(ignore), int(queued))
        except ValueError as e:
            raise RemoteProtocolError(f"bad show jobs row {line!r}") from e


def encode_admin(command: str, *args: str) -> bytes:
    """Encode one admin command line, e.g. ``encode_admin("maxqueue", "resize", "100")``."""
    words = [command, *args]
    for word in words:
        if not word or any(c in word for c in "\r\n"):
            raise LocalProtocolError(f"admin command word {word!r} is empty or holds a line break")
    return (" ".join(words) + "\n").encode()


class AdminParser:
    """Pairs admin answers with the commands sent, in order."""

    def __init__(self) -> None:
        self._pending: deque[str] = deque()
        self._buf = bytearray()
        self._rows: list[str] = []

    def sent(self, command: str) -> None:
        """Record that ``command`` (its first word or two) was sent."""
        key = command.strip().lower()
        key = key if key in _KNOWN else key.split(" ", 1)[0]
        self._pending.append(key)

    def feed(self, data: bytes) -> list[AdminResponse]:
        """Add received bytes; return the answers they complete."""
        self._buf += data
        out: list[AdminResponse] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > _MAX_LINE:
                    raise RemoteProtocolError("admin line longer than 1 MiB")
                return out
            line = self._buf[:nl].decode("utf-8", "replace").rstrip("\r")
            del self._buf[: nl + 1]
            answer = self._line(line)
            if answer is not None:
                out.append(answer)

    def _line(self, line: str) -> AdminResponse | None:
        if not self._pending:
            raise RemoteProtocolError(f"unexpected admin line {line!r}")
        command = self._pending[0]
        if line.startswith("ERR ") and not self._rows:
            self._pending.popleft()
            return AdminResponse(command, False, (line[4:],))
        if command in _MULTILINE:
            if line != ".":
                self._rows.append(line)
                return None
            rows, self._rows = tuple(self._rows), []
            self._pending.popleft()
            return AdminResponse(command, True, rows)
        self._pending.popleft()
        ok = line == "OK" or line.startswith("OK ")
        return AdminResponse(command, ok, (line[3:] if ok else line,))
