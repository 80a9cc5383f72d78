"""Can the job server notice a worker that vanished?  Read its keepalive timer once at start-up.

gearmand learns that a worker is gone only when the worker's connection
closes.  A worker whose host vanishes (powered off, cut off by a firewall or
a NAT that forgot it) sends no FIN, and then only TCP keepalive on gearmand's
side of the connection ends it.  Until then the job that worker held stays
"running" there: no other worker gets it and its client waits.  Debian's
gearmand 1.1.20 enables keepalive on every connection, but with the kernel's
default timing unless started with ``--keepalive-idle`` and friends: 7,200 s
idle, then 9 probes 75 s apart, so about 2 h 11 min.

The probe: open a connection, ask ``version`` (the admin protocol), and
while it is open find gearmand's end of it in ``/proc/net/tcp`` (or
``tcp6``): its timer column says whether a keepalive timer runs and when it
fires, which on a fresh connection is the keepalive idle time.  That is only
possible when gearmand runs on this host in this network namespace; for any
other server nothing is said, as nothing is known.  Behind TLS (stunnel) the
socket found would be the proxy's, so those servers are not probed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass

import structlog

from ..address import parse_address

__all__ = ["KEEPALIVE_ADVICE", "SLOW_IDLE", "KeepaliveSeen", "gearmand_keepalive", "timer_of", "warn_if_blind"]

log = structlog.get_logger("gearworker.server")

#: gearmand's keepalive idle time above which a vanished worker's job waits too long (seconds).
SLOW_IDLE = 60.0
#: What to start gearmand with (docs/reliability.md has the measured times of each setting).
KEEPALIVE_ADVICE = "start gearmand with --keepalive --keepalive-idle=5 --keepalive-interval=2 --keepalive-count=3"


@dataclass(frozen=True, slots=True)
class KeepaliveSeen:
    """What gearmand's end of a fresh connection showed: its version and its keepalive idle time."""

    server: str
    version: str
    idle: float | None  # seconds until its first keepalive probe; None: no keepalive at all


def _proc_address(host: str, port: int) -> list[tuple[str, str]]:
    """``(file, "ADDR:PORT")`` as /proc/net/tcp{,6} write ``host:port`` (both forms for IPv4)."""
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
    except OSError:
        packed6 = socket.inet_pton(socket.AF_INET6, host)
        words = "".join(f"{int.from_bytes(packed6[i : i + 4], sys.byteorder):08X}" for i in range(0, 16, 4))
        return [("tcp6", f"{words}:{port:04X}")]
    mapped = b"\x00" * 10 + b"\xff\xff" + packed  # an IPv6 socket that accepted an IPv4 connection
    words = "".join(f"{int.from_bytes(mapped[i : i + 4], sys.byteorder):08X}" for i in range(0, 16, 4))
    return [("tcp", f"{int.from_bytes(packed, sys.byteorder):08X}:{port:04X}"), ("tcp6", f"{words}:{port:04X}")]


def timer_of(table: str, local: str, remote: str, ticks_per_s: int = 100) -> tuple[int, float] | None:
    """The timer of the socket ``local`` -> ``remote`` in a /proc/net/tcp text: (kind, seconds left).

    Kind 0: none, 1: retransmit, 2: keepalive, 4: zero-window probe.  None
    when there is no such socket (another host, another namespace).
    """
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 5 and fields[1] == local and fields[2] == remote:
            kind, _, when = fields[5].partition(":")
            return int(kind, 16), int(when, 16) / ticks_per_s
    return None


def _server_end(ours: tuple[str, int], theirs: tuple[str, int]) -> tuple[int, float] | None:
    ticks = os.sysconf("SC_CLK_TCK")
    for (file, local), (_, remote) in zip(_proc_address(*theirs), _proc_address(*ours), strict=True):
        try:
            with open(f"/proc/net/{file}") as f:
                table = f.read()
        except OSError:
            return None
        found = timer_of(table, local, remote, ticks)
        if found is not None:
            return found
    return None


async def gearmand_keepalive(server: str, timeout: float) -> KeepaliveSeen | None:
    """Probe ``server`` (see the module's docstring); None when its end of the connection cannot be seen."""
    host, port = parse_address(server)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"version\n")
            version = (await reader.readline()).decode(errors="replace").strip().removeprefix("OK ").strip()
            ours, theirs = writer.get_extra_info("sockname")[:2], writer.get_extra_info("peername")[:2]
            for _ in range(5):  # a retransmit timer (unacknowledged data) hides the keepalive one for a moment
                timer = _server_end(ours, theirs)
                if timer is None:
                    return None
                kind, left = timer
                if kind in (0, 2):
                    return KeepaliveSeen(server, version, left if kind == 2 else None)
                await asyncio.sleep(0.02)
            return None
        finally:
            writer.close()


async def warn_if_blind(servers: list[str], timeout: float) -> None:
    """Log once per server whose gearmand cannot notice a vanished worker soon (no keepalive, or a slow one)."""
    for server in servers:
        try:
            seen = await gearmand_keepalive(server, timeout)
        except (OSError, TimeoutError, ValueError):
            continue  # not up yet, or not ours to judge: the worker's own connections report it
        if seen is None or (seen.idle is not None and seen.idle <= SLOW_IDLE):
            continue
        if seen.idle is None:
            detail = "no TCP keepalive on its connections"
            holds = "for as long as the connection is thought alive (for good)"
        else:
            detail = f"TCP keepalive after {seen.idle:.0f} s idle"
            holds = "until keepalive gives up (with the kernel's defaults about 2 h 11 min)"
        log.warning(
            "gearmand.blind_to_dead_workers",
            server=server,
            version=seen.version,
            detail=detail,
            why=f"a worker that vanishes without closing its connection keeps its running jobs there {holds}",
            fix=KEEPALIVE_ADVICE,
        )
