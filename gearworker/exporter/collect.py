"""Collect gearmand's ``status`` (and ``version``) per server and render it in the Prometheus text format.

One module for both the web app's ``/metrics`` and ``gearworker exporter``:
:func:`gather` asks the servers through a :class:`~gearworker.client.Client`,
:func:`render` writes the text.  Waiting jobs are gearmand's total minus the
running ones (its ``status`` counts running jobs as queued), as in the common
exporter, which is the number to scale workers on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..protocol import StatusRow

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["CONTENT_TYPE", "ServerState", "gather", "render"]

#: The Prometheus text exposition format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class ServerState:
    """One job server as last seen: did it answer, its ``status`` rows, its version."""

    address: str
    up: bool
    rows: Sequence[StatusRow] = field(default_factory=tuple)
    version: str | None = None


async def gather(client: Client, servers: Sequence[str], *, version: bool = True) -> list[ServerState]:
    """Ask each of ``servers`` (the client's) for ``status``, and ``version`` unless told not to; never raises."""

    async def one(address: str) -> ServerState:
        try:
            lines = await client.admin("status", server=address)
            rows = [StatusRow.parse(line) for line in lines]
        except Exception:  # unreachable, or an answer we cannot read: down, as far as a scrape can tell
            return ServerState(address, False)
        text = None
        if version:
            try:
                answer = await client.admin("version", server=address)
                text = answer[0] if answer else None
            except Exception:
                text = None
        return ServerState(address, True, rows, text)

    return list(await asyncio.gather(*(one(s) for s in servers)))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(
    servers: Sequence[ServerState],
    failed: Mapping[str, int] | None = None,
    *,
    failed_store_up: bool | None = None,
) -> bytes:
    """The exposition text: gearmand's state per server and function, then the failed-job counts (when given)."""
    out: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[str, int]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{labels} {value}" for labels, value in samples)

    family(
        "gearman_up",
        "Whether the job server answered the admin status query.",
        [(f'{{server="{_label(s.address)}"}}', int(s.up)) for s in servers],
    )
    family(
        "gearman_version_info",
        "The job server's version.",
        [(f'{{server="{_label(s.address)}",version="{_label(s.version)}"}}', 1) for s in servers if s.version],
    )
    rows = [(f'{{server="{_label(s.address)}",function="{_label(r.function)}"}}', r) for s in servers for r in s.rows]
    family("gearman_jobs", "Jobs queued or running, by function.", [(lb, r.queued) for lb, r in rows])
    family("gearman_jobs_running", "Jobs running, by function.", [(lb, r.running) for lb, r in rows])
    family(
        "gearman_jobs_waiting",
        "Jobs waiting for a worker (queued, not running), by function.",
        [(lb, max(0, r.queued - r.running)) for lb, r in rows],
    )
    family("gearman_workers", "Workers registered for the function.", [(lb, r.workers) for lb, r in rows])
    if failed_store_up is not None:
        family(
            "gearworker_failed_store_up",
            "Whether the failed-job store (failed_jobs) could be read.",
            [("", int(failed_store_up))],
        )
    if failed is not None:
        family(
            "gearworker_failed_jobs",
            "Records in the failed-job store (failed_jobs), by function.",
            [(f'{{function="{_label(f)}"}}', n) for f, n in sorted(failed.items())],
        )
    return ("\n".join(out) + "\n").encode()
