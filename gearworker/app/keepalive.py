"""Can the job server notice a worker that vanished?  Read its keepalive timer once at start-up.

gearmand learns that a worker is gone only when the worker's connection
closes.  A worker whose host vanishes (powered off, cut off by a firewall or
a NAT that forgot it) sends no FIN, and then only TCP keepalive on gearmand's
side of the connection ends it.  Until then the job that worker held stays
"running" there: no other worker gets it and its client waits.  Debian's
gearmand 1.1.20 enables keepalive on every connection, but with the kernel's
timing unless started with ``--keepalive-idle`` and friends: 7,200 s idle,
then 9 probes 75 s apart, so about 2 h 11 min.

The probe opens no connection and asks nothing: it reads ``/proc/net/tcp``
(and ``tcp6``) for the connections gearmand accepted on the server's address
(ours among them), whose timer column says whether a keepalive timer runs
and when it fires (at most the keepalive idle time).  Those ends are visible
only when gearmand runs on this host in this network namespace; any other
server is not judged, as nothing is known of it.  Behind TLS (stunnel) the
end found would be the proxy's, so the worker does not probe then.  It runs
once, right after the first connection is up: a worker under load never
sees it (tests/reliability/test_soak.py counts file descriptors).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from ..address import parse_address

__all__ = ["KEEPALIVE_ADVICE", "SLOW_IDLE", "Socket", "gearmand_keepalive", "server_ends", "warn_if_blind"]

log = structlog.get_logger("gearworker.server")

#: gearmand's keepalive idle time above which a vanished worker's job waits too long (seconds).
SLOW_IDLE = 60.0
#: What to start gearmand with (docs/reliability.md has the measured times of each setting).
KEEPALIVE_ADVICE = "start gearmand with --keepalive --keepalive-idle=5 --keepalive-interval=2 --keepalive-count=3"


@dataclass(frozen=True, slots=True)
class Socket:
    """One row of /proc/net/tcp{,6}: addresses as the kernel writes them, the timer, the inode."""

    local: str
    remote: str
    timer: int  # 0 none, 1 retransmit, 2 keepalive, 4 zero-window probe
    seconds: float  # until the timer fires
    established: bool


def parse_table(text: str, ticks_per_s: int = 100) -> list[Socket]:
    """The rows of a /proc/net/tcp (or tcp6) text."""
    rows = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        kind, _, when = f[5].partition(":")
        rows.append(Socket(f[1], f[2], int(kind, 16), int(when, 16) / ticks_per_s, f[3] == "01"))
    return rows


def proc_forms(ip: str, port: int) -> list[str]:
    """``ip:port`` as /proc/net/tcp{,6} write it (an IPv4 address also as IPv6-mapped: a dual-stack socket)."""

    def words(packed: bytes) -> str:
        return "".join(f"{int.from_bytes(packed[i : i + 4], sys.byteorder):08X}" for i in range(0, len(packed), 4))

    try:
        v4 = socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        return [f"{words(socket.inet_pton(socket.AF_INET6, ip))}:{port:04X}"]
    mapped = bytes(10) + b"\xff\xff" + v4
    return [f"{words(v4)}:{port:04X}", f"{words(mapped)}:{port:04X}"]


def server_ends(rows: Iterable[Socket], server: list[str]) -> list[Socket]:
    """The connections accepted on ``server``'s address (its /proc forms): gearmand's ends, connected."""
    return [r for r in rows if r.local in server and r.established]


def gearmand_keepalive(server: str) -> float | None:
    """Seconds until gearmand's first keepalive probe on its connections on ``server``; None: no keepalive.

    Raises LookupError when gearmand's ends are not to be seen (another host
    or namespace, or no connection yet).  Blocking: /proc and a name lookup.
    """
    host, port = parse_address(server)
    ip = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    forms = proc_forms(str(ip), port)
    ticks = os.sysconf("SC_CLK_TCK")
    rows: list[Socket] = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{name}") as f:
                rows += parse_table(f.read(), ticks)
        except OSError as e:
            raise LookupError(f"/proc/net/{name}: {e}") from e
    ends = server_ends(rows, forms)
    timers = [end for end in ends if end.timer in (0, 2)]  # a retransmit timer hides the keepalive one
    if not timers:
        raise LookupError(f"gearmand's end of our connections to {server} is not on this host")
    keepalive = [end.seconds for end in timers if end.timer == 2]
    return max(keepalive) if keepalive else None


async def warn_if_blind(servers: list[str], connected: asyncio.Event) -> None:
    """Once our connections are up: log each server whose gearmand cannot notice a vanished worker soon."""
    await connected.wait()
    await asyncio.sleep(0.2)  # the other servers' connections too, most likely
    for server in servers:
        try:
            idle = await asyncio.to_thread(gearmand_keepalive, server)
        except (LookupError, OSError, ValueError):
            continue  # not ours to judge
        if idle is not None and idle <= SLOW_IDLE:
            continue
        if idle is None:
            detail = "no TCP keepalive on its connections"
            holds = "for as long as its connection is thought alive"
        else:
            detail = f"TCP keepalive after {idle:.0f} s idle"
            holds = "until keepalive gives up (with the kernel's defaults, about 2 h 11 min)"
        log.warning(
            "gearmand.blind_to_dead_workers",
            server=server,
            detail=detail,
            why=f"a worker that vanishes without closing its connection keeps its running jobs there {holds}",
            fix=KEEPALIVE_ADVICE,
        )
