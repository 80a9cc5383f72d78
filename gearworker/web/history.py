"""Queue history: gearmand's ``status`` every second, kept for an hour at 1 s and a day at 1 min.

The console's charts read it (``GET /api/queues/history``).  It lives in a
small sqlite file under the web storage root (:data:`HISTORY_FILE`), so a
restart of the app keeps the charts.

- **Sampling** (:meth:`History.run`): once a second, at the turn of the
  second, the shared status table (:meth:`Gateway.cached_status
  <gearworker.web.service.Gateway.cached_status>`, the same answer the Servers
  page gets) gives one row per server and function: waiting (gearmand's total
  minus running), running, workers.  A server that does not answer gives no
  row: the chart shows a gap, not a zero.
- **Minutes**: each sample also goes into its minute's sums (count, waiting
  sum and peak, running sum, workers sum); a minute is stored as those sums,
  merged into any row already there, so a restart within a minute loses nothing.
- **Writes** are batched: rows wait in memory and are written every
  :data:`FLUSH_EVERY` seconds, one transaction, on the history's own thread
  (never on the event loop); a read first writes what is waiting, on the same
  thread, so it sees every sample.  Stopping the app writes the rest.
- **Bounded**: rows older than an hour (1 s) or a day (1 min) are deleted every
  minute, and at most :data:`MAX_SERIES` server-and-function series are kept
  per sample (the busiest), so the file stays at a few MB (at most about
  :data:`MAX_SERIES` x 3,600 + 1,440 rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

__all__ = ["FLUSH_EVERY", "HISTORY_FILE", "MAX_SERIES", "SPANS", "History"]

log = structlog.get_logger("gearworker.web")

HISTORY_FILE = "queue-history.db"
#: Seconds of history per span and the step of its points.
SPANS = {"hour": (3600, 1), "day": (86400, 60)}
FLUSH_EVERY = 5.0
PRUNE_EVERY = 60.0
#: Most server-and-function series stored per sample (the busiest first).
MAX_SERIES = 200

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS queue_1s (t INTEGER NOT NULL, server TEXT NOT NULL, function TEXT NOT NULL, "
    "waiting INTEGER, running INTEGER, workers INTEGER, PRIMARY KEY (t, server, function)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS queue_1m (t INTEGER NOT NULL, server TEXT NOT NULL, function TEXT NOT NULL, "
    "n INTEGER, waiting_sum INTEGER, waiting_max INTEGER, running_sum INTEGER, workers_sum INTEGER, "
    "PRIMARY KEY (t, server, function)) WITHOUT ROWID",
)
_UPSERT_MINUTE = (
    "INSERT INTO queue_1m (t, server, function, n, waiting_sum, waiting_max, running_sum, workers_sum) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (t, server, function) DO UPDATE SET "
    "n = n + excluded.n, waiting_sum = waiting_sum + excluded.waiting_sum, "
    "waiting_max = max(waiting_max, excluded.waiting_max), running_sum = running_sum + excluded.running_sum, "
    "workers_sum = workers_sum + excluded.workers_sum"
)

Row = tuple[int, str, str, int, int, int]  # t, server, function, waiting, running, workers


class History:
    """The sampler and its sqlite file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seconds: list[Row] = []
        self._minutes: dict[tuple[int, str, str], list[int]] = {}  # n, waiting sum, waiting max, running, workers
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # used on the executor's one thread only
        self._pruned = 0.0
        self._capped = False
        self.samples = 0

    # -- sampling (on the event loop) ------------------------------------------

    def record(self, t: int, servers: Sequence[Mapping[str, Any]]) -> None:
        """Add one sample: ``servers`` as :meth:`Gateway.server_status` gives them (unanswered ones are skipped)."""
        rows: list[Row] = []
        for server in servers:
            if not server.get("ok"):
                continue
            for f in server.get("functions", ()):
                queued, running = int(f["queued"]), int(f["running"])
                rows.append(
                    (
                        t,
                        str(server["address"]),
                        str(f["function"]),
                        max(0, queued - running),
                        running,
                        int(f["workers"]),
                    )
                )
        if len(rows) > MAX_SERIES:
            if not self._capped:
                log.warning("web.history.capped", series=len(rows), kept=MAX_SERIES)
                self._capped = True
            rows = sorted(rows, key=lambda r: (r[3] + r[4], r[5]), reverse=True)[:MAX_SERIES]
        self._seconds += rows
        minute = t - t % 60
        for _, address, function, waiting, running, workers in rows:
            acc = self._minutes.get((minute, address, function))
            if acc is None:
                self._minutes[(minute, address, function)] = [1, waiting, waiting, running, workers]
            else:
                acc[0] += 1
                acc[1] += waiting
                acc[2] = max(acc[2], waiting)
                acc[3] += running
                acc[4] += workers
        self.samples += 1

    async def run(self, status: Any) -> None:
        """Sample ``await status()`` at each turn of the second, write every :data:`FLUSH_EVERY` s, until cancelled."""
        flushed = time.monotonic()
        try:
            while True:
                await asyncio.sleep(1.0 - time.time() % 1.0)
                t = round(time.time())
                try:
                    table = await status()
                except Exception as e:  # no answer: no row (a gap); the loop goes on
                    log.debug("web.history.no_status", error=f"{type(e).__name__}: {e}")
                else:
                    self.record(t, table.get("servers", ()))
                if time.monotonic() - flushed >= FLUSH_EVERY:
                    flushed = time.monotonic()
                    try:
                        await self.flush()
                    except (OSError, sqlite3.Error) as e:
                        log.warning("web.history.write_error", path=str(self.path), error=f"{type(e).__name__}: {e}")
        finally:
            await asyncio.shield(self._final_flush())

    async def _final_flush(self) -> None:
        with contextlib.suppress(OSError, sqlite3.Error):
            await self.flush()

    # -- the file (on its own thread) ------------------------------------------

    def _take(self) -> tuple[list[Row], list[tuple[Any, ...]]]:
        seconds, self._seconds = self._seconds, []
        minutes = [(t, s, f, *acc) for (t, s, f), acc in self._minutes.items()]
        self._minutes = {}
        return seconds, minutes

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="gearworker-history")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def flush(self) -> None:
        """Write the samples waiting in memory (one transaction, on the history's thread)."""
        seconds, minutes = self._take()
        if seconds or minutes:
            await self._call(self._write, seconds, minutes, time.time())

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a chart's last seconds may go with a power cut
            for statement in _SCHEMA:
                db.execute(statement)
            self._db = db
        return self._db

    def _write(self, seconds: list[Row], minutes: list[tuple[Any, ...]], now: float) -> None:
        db = self._open()
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO queue_1s VALUES (?, ?, ?, ?, ?, ?)", seconds)
            db.executemany(_UPSERT_MINUTE, minutes)
            if now - self._pruned >= PRUNE_EVERY:
                db.execute("DELETE FROM queue_1s WHERE t < ?", (int(now) - SPANS["hour"][0],))
                db.execute("DELETE FROM queue_1m WHERE t < ?", (int(now) - SPANS["day"][0],))
                self._pruned = now
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def query(self, span: str, *, function: str | None = None, server: str | None = None) -> dict[str, Any]:
        """One span's points, summed over the functions and servers not named, as columns (see docs/web.md)."""
        seconds, minutes = self._take()
        return dict(await self._call(self._read, seconds, minutes, span, function, server, time.time()))

    def _read(
        self,
        seconds: list[Row],
        minutes: list[tuple[Any, ...]],
        span: str,
        function: str | None,
        server: str | None,
        now: float,
    ) -> dict[str, Any]:
        if seconds or minutes:
            self._write(seconds, minutes, now)
        length, step = SPANS[span]
        since = int(now) - length
        where: list[str] = ["t >= ?"]
        args: list[Any] = [since]
        if function is not None:
            where.append("function = ?")
            args.append(function)
        if server is not None:
            where.append("server = ?")
            args.append(server)
        db = self._open()
        out: dict[str, Any] = {"span": span, "step": step, "since": since, "until": int(now)}
        cond = " AND ".join(where)
        if span == "hour":
            rows = db.execute(
                f"SELECT t, SUM(waiting), SUM(running), SUM(workers) FROM queue_1s WHERE {cond} GROUP BY t ORDER BY t",
                args,
            ).fetchall()
            out.update(
                t=[r[0] for r in rows],
                waiting=[r[1] for r in rows],
                running=[r[2] for r in rows],
                workers=[r[3] for r in rows],
            )
        else:
            rows = db.execute(
                "SELECT t, SUM(waiting_sum * 1.0 / n), SUM(waiting_max), SUM(running_sum * 1.0 / n), "
                f"SUM(workers_sum * 1.0 / n) FROM queue_1m WHERE {cond} GROUP BY t ORDER BY t",
                args,
            ).fetchall()
            out.update(
                t=[r[0] for r in rows],
                waiting=[round(r[1], 2) for r in rows],
                waiting_max=[r[2] for r in rows],
                running=[round(r[3], 2) for r in rows],
                workers=[round(r[4], 2) for r in rows],
            )
        series = db.execute(
            f"SELECT DISTINCT server, function FROM {'queue_1s' if span == 'hour' else 'queue_1m'} WHERE t >= ?",
            (since,),
        ).fetchall()
        out["functions"] = sorted({f for _, f in series})
        out["servers"] = sorted({s for s, _ in series})
        return out

    async def close(self) -> None:
        """Write what is waiting and close the file."""
        try:
            await self.flush()
        finally:
            if self._executor is not None:
                with contextlib.suppress(Exception):
                    await self._call(self._close_db)
                self._executor.shutdown(wait=False)
                self._executor = None

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
