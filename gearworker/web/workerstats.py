"""Jobs done and failed per second and run-time percentiles per function, from the workers' own ``/metrics``.

With the ``web_worker_metrics`` setting (the workers' ``metrics`` addresses),
the console scrapes each worker every :data:`SCRAPE_EVERY` seconds and keeps
the last :data:`WINDOW` seconds of samples.  Per function, over that window
and summed over the workers:

- ``done_per_s``: ``gearworker_jobs_total{outcome="complete"}``'s increase per second;
- ``failed_per_s``: the same for ``fail``, ``timeout`` and ``crash``;
- ``p50`` / ``p95``: from ``gearworker_job_duration_seconds`` buckets' increase
  (what PromQL's ``histogram_quantile`` over ``rate(...[1m])`` says), in seconds.

A counter that went down (the worker restarted) counts from zero again.
Until two scrapes of a worker exist there is no rate (None).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..address import parse_address
from ..metrics.text import histogram_quantile, parse

__all__ = ["SCRAPE_EVERY", "WINDOW", "WorkerStats"]

log = structlog.get_logger("gearworker.web")

SCRAPE_EVERY = 5.0
WINDOW = 60.0
_TIMEOUT = 3.0
_MAX_BODY = 8 * 1024 * 1024
DONE = ("complete",)
FAILED = ("fail", "timeout", "crash")


@dataclass
class _Sample:
    at: float
    jobs: dict[tuple[str, str], float]  # (function, outcome) -> count
    buckets: dict[str, dict[float, float]]  # function -> le -> cumulative count


@dataclass
class _Target:
    address: str
    samples: deque[_Sample] = field(default_factory=deque)
    error: str | None = None
    scraped_at: float | None = None


def read_metrics(text: str, at: float) -> _Sample:
    """The job counters and duration buckets in a worker's ``/metrics`` text."""
    jobs: dict[tuple[str, str], float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for name, labels, value in parse(text, ("gearworker_jobs_total", "gearworker_job_duration_seconds_bucket")):
        function = labels.get("function", "")
        if name == "gearworker_jobs_total":
            jobs[(function, labels.get("outcome", ""))] = value
        elif name == "gearworker_job_duration_seconds_bucket" and "le" in labels:
            buckets.setdefault(function, {})[float(labels["le"])] = value
    return _Sample(at, jobs, buckets)


def _increase(new: float, old: float) -> float:
    return new - old if new >= old else new  # a counter that went down started again from zero


async def fetch(address: str, path: str = "/metrics") -> str:
    """GET ``http://address/metrics`` (plain HTTP/1.0, what the worker's endpoint speaks)."""
    host, port = parse_address(address, default_host="127.0.0.1", default_port=None)
    async with asyncio.timeout(_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read(_MAX_BODY)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    first = head.split(b"\r\n", 1)[0]
    status = first.split()
    if len(status) < 2 or status[1] != b"200":
        raise ConnectionError(f"{address} answered {first.decode('latin-1')!r}")
    return body.decode("utf-8", "replace")


class WorkerStats:
    """Scrapes the workers' metrics and turns them into rates and percentiles (see the module docstring)."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.targets = [_Target(a) for a in addresses]

    async def scrape(self) -> None:
        """Scrape every worker once (concurrently)."""
        await asyncio.gather(*(self._scrape(t) for t in self.targets))

    async def _scrape(self, target: _Target) -> None:
        try:
            text = await fetch(target.address)
        except Exception as e:
            target.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            return
        now = time.monotonic()
        target.samples.append(read_metrics(text, now))
        target.error, target.scraped_at = None, time.time()
        while len(target.samples) > 2 and now - target.samples[1].at >= WINDOW:
            target.samples.popleft()

    async def run(self) -> None:
        """Scrape every :data:`SCRAPE_EVERY` seconds until cancelled."""
        while True:
            await self.scrape()
            await asyncio.sleep(SCRAPE_EVERY)

    def summary(self) -> dict[str, Any]:
        """``{"functions": {name: {done_per_s, failed_per_s, p50, p95}}, "workers": [...], "window": s}``."""
        done: dict[str, float] = {}
        failed: dict[str, float] = {}
        seconds: dict[str, float] = {}
        buckets: dict[str, dict[float, float]] = {}
        window = 0.0
        for target in self.targets:
            if len(target.samples) < 2:
                continue
            old, new = target.samples[0], target.samples[-1]
            span = new.at - old.at
            window = max(window, span)
            for (function, outcome), value in new.jobs.items():
                gained = _increase(value, old.jobs.get((function, outcome), 0.0))
                if outcome in DONE:
                    done[function] = done.get(function, 0.0) + gained / span
                elif outcome in FAILED:
                    failed[function] = failed.get(function, 0.0) + gained / span
                seconds[function] = max(seconds.get(function, 0.0), span)
            for function, counts in new.buckets.items():
                before = old.buckets.get(function, {})
                total = buckets.setdefault(function, {})
                for le, value in counts.items():
                    total[le] = total.get(le, 0.0) + _increase(value, before.get(le, 0.0))
        functions: dict[str, dict[str, Any]] = {}
        for function in sorted(set(done) | set(failed) | set(buckets)):
            counts = buckets.get(function, {})
            functions[function] = {
                "done_per_s": round(done.get(function, 0.0), 3),
                "failed_per_s": round(failed.get(function, 0.0), 3),
                "p50": _rounded(histogram_quantile(0.5, list(counts.items()))),
                "p95": _rounded(histogram_quantile(0.95, list(counts.items()))),
            }
        return {
            "functions": functions,
            "window": round(window, 1),
            "workers": [
                {
                    "address": t.address,
                    "ok": t.error is None and t.scraped_at is not None,
                    "error": t.error,
                    "scraped_at": t.scraped_at,
                }
                for t in self.targets
            ],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
