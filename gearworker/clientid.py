"""The client id a gearworker process gives gearmand (SET_CLIENT_ID), and reading it back.

``gearadmin --workers`` (the admin ``workers`` list) shows it for every
connection, so it says where a worker runs: ``<host>-<pid>@gearworker/<version>``,
e.g. ``web-7f3a-4211@gearworker/0.3.0``.  ``<host>`` is the ``client_id`` setting
when set, else the host name.

- **Unique per process, comparable**: the scheduler elects the lowest id among
  the connections registered for a function (:func:`gearworker.schedule.rules.elect`),
  so ids are plain strings that differ per process (host and pid); all
  processes compare the same strings, whatever their versions.
- **One word**: gearmand prints ``FD IP ID : FUNCTIONS``; an id with a space
  would shift the columns for every reader (ours splits on whitespace), so
  the ``client_id`` setting may hold none, and at most :data:`MAX_PREFIX`
  characters: gearmand keeps 127 bytes of an id.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

__all__ = ["MAX_PREFIX", "ClientId", "parse_client_id", "prefix_problem", "worker_client_id"]

MAX_PREFIX = 64
_MARK = "@gearworker/"
_OURS = re.compile(r"^(?P<host>\S+)-(?P<pid>[0-9]{1,10})@gearworker/(?P<version>\S+)$")


@dataclass(frozen=True, slots=True)
class ClientId:
    """What a gearworker process's client id says about it."""

    host: str
    pid: int
    version: str


def worker_client_id(prefix: str = "", *, pid: int | None = None, version: str | None = None) -> str:
    """This process's client id: ``<prefix or host name>-<pid>@gearworker/<version>``."""
    if version is None:
        from . import __version__

        version = str(__version__)
    return f"{prefix or socket.gethostname()}-{os.getpid() if pid is None else pid}{_MARK}{version}"


def parse_client_id(text: str) -> ClientId | None:
    """The host, pid and version in a gearworker process's id; None for any other client's."""
    found = _OURS.match(text)
    if found is None:
        return None
    return ClientId(found["host"], int(found["pid"]), found["version"])


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot start a client id (the ``client_id`` setting), or None."""
    if len(prefix) > MAX_PREFIX:
        return f"must be at most {MAX_PREFIX} characters (gearmand keeps 127 bytes of a client id)"
    if any(c.isspace() or not c.isprintable() for c in prefix):
        return "must be one word of printable characters (gearmand's workers list is split on spaces)"
    return None
