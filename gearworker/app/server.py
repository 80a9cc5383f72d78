"""The worker process's lifecycle, in one place: ``startup()`` → serve → ``shutdown()``.

Modelled on uvicorn: signal handlers only set events, and ``serve()`` is a
plain coroutine that tests drive without signals.  Each phase has its bound:

- a stop signal (:attr:`Server.should_exit`, set by :mod:`.signals`) cancels
  ``startup()``: nothing runs yet that needs time to finish, and a handler
  module that hangs at import in a pool process would hang it for good;
  ``shutdown()`` then stops what had started;
- ``shutdown()`` lasts the grace period: each of its steps waits at most for
  what is left of it (and :data:`LAST_STEP` once it is over), then gives up
  on the hung server, disk or process and goes on;
- a second signal (:attr:`Server.force_exit`) cancels whichever phase runs,
  and :meth:`Server.stop_now` does only what must not be left undone: pool
  processes killed, connections dropped (gearmand re-queues their jobs), the
  pid file removed, the local gearmand stopped.  The command line also ends
  the process with ``os._exit`` should that, or the exit after it, take
  longer than :data:`.signals.FORCED_EXIT_TIMEOUT`.

SIGHUP reloads the handlers without downtime (:class:`~gearworker.app.reload.Reloader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from ..address import parse_address
from ..config import Settings, activate
from ..metrics import NO_METRICS, MetricsSink, NullMetrics
from ..worker.dispatch import Worker
from ..worker.pool import Pool
from ..worker.registry import Registry
from .localserver import LocalGearmand
from .pidfile import PidFile
from .reload import Reloader
from .schedules import Schedules

if TYPE_CHECKING:
    from ..metrics.prometheus import Metrics

__all__ = ["Server"]

log = structlog.get_logger("gearworker.server")

#: Seconds a step of the shutdown still gets once the grace period is over: a healthy server's
#: connection closes (what was queued for it written) in far less; a hung one is given up on.
LAST_STEP = 0.5
#: Seconds a phase cut short by a signal gets to unwind: its waits give way to a cancel at once,
#: this bounds one that would not.
UNWIND = 0.5
#: Seconds the local gearmand gets to exit on SIGTERM in a forced stop, before SIGKILL.
FORCED_GEARMAND_TIMEOUT = 0.3


class Server:
    """Runs a :class:`Worker` with its pool, schedules, pid file, metrics and systemd notifications."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.should_exit = asyncio.Event()  # a stop signal (app/signals.py), or a test, sets them
        self.force_exit = asyncio.Event()
        self._deadline = 0.0  # the end of the grace period, monotonic; set when shutdown() begins
        self.pool: Pool | None = None
        self.worker: Worker | None = None
        self.metrics: MetricsSink = NO_METRICS
        self._local: LocalGearmand | None = None
        self._pidfile: PidFile | None = None
        self._notifier: Any = None
        self._background: list[asyncio.Task[Any]] = []
        self._metrics_server: Any = None
        self.schedules = Schedules(settings, self._workers)
        self._failed: Any = None  # the RecordFailures middleware, when failed_jobs is set
        self.reloader = Reloader(self)

    # -- the whole life -----------------------------------------------------
    async def serve(self) -> int:
        """Start, run until :attr:`should_exit` is set, shut down; return the exit code.

        Each phase runs as a task of its own, which the signal that ends it
        cancels (the module's docstring).
        """
        try:
            # A stop signal cuts the start-up short.
            if await self._run_unless(self.should_exit, self.startup()):
                self._background.append(asyncio.create_task(self.reloader.run(self.should_exit)))
                await self.should_exit.wait()
        finally:
            # A second signal cuts the shutdown short: then only what must not be left undone.
            if not await self._run_unless(self.force_exit, self.shutdown()):
                self.stop_now()
        return 0

    async def _run_unless(self, event: asyncio.Event, phase: Coroutine[Any, Any, None]) -> bool:
        """Run ``phase`` to its end unless ``event`` is set first, which cancels it; True when it ran to its end."""
        if event.is_set():
            phase.close()
            return False
        task = asyncio.create_task(phase)
        cut = asyncio.create_task(event.wait())
        try:
            await asyncio.wait({task, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=UNWIND)
        if not task.done() or task.cancelled():
            return False
        task.result()  # what the phase raised, raised here
        return True

    # -- startup --------------------------------------------------------------
    async def startup(self) -> None:
        s = self.settings
        activate(s)  # what handlers see through config.active()
        self._notifier = _notifier()
        if s.pid_file:
            self._pidfile = PidFile(s.pid_file)
            self._pidfile.acquire()
        if not s.servers:
            self._local = LocalGearmand(s.local_gearmand_port)
            await self._local.start()
            s.servers = [self._local.address]
        # Prometheus bookkeeping costs ~3 us of every job (16% of a tiny job's CPU,
        # measured with py-spy): keep it only when something can read it.
        prometheus = _prometheus() if s.metrics else None
        if prometheus is not None:
            self.metrics = prometheus
        if s.failed_jobs:
            from ..failed import RecordFailures, open_store

            store = open_store(s.failed_jobs, workload_limit=s.failed_workload_limit)
            self._failed = RecordFailures(store, s.servers, settings=s)
        # The server's pool before it starts: shutdown() closes one whose start a stop cut short.
        self.pool = self.new_pool(self.registry)
        if self.pool is not None:
            await self.pool.start()
            self.metrics.set_pool(self.pool.size)
        self.worker = self.start_worker(self.registry, self.pool)
        self.schedules.start(self.registry, self.worker)
        if prometheus is not None:
            await self._start_metrics(prometheus)
        self._background.append(asyncio.create_task(self._announce_ready()))
        if not s.tls:  # behind TLS the socket seen would be the proxy's (app/keepalive.py)
            from .keepalive import warn_if_blind

            connected = self.worker.first_connection
            self._background.append(asyncio.create_task(warn_if_blind(list(s.servers), connected)))
        log.info(
            "server.started",
            pid=os.getpid(),
            servers=s.servers,
            functions=sorted(self.registry.functions),
            processes=self.pool.size if self.pool else 0,
            concurrency=s.concurrency,
        )

    def new_pool(self, registry: Registry) -> Pool | None:
        """A pool for ``registry``'s cpu handlers (None when it has none), not started."""
        if not any(h.cpu for h in registry.handlers.values()):
            return None
        return Pool(self.settings, metrics=self.metrics)

    async def start_pool(self, registry: Registry) -> Pool | None:
        """A pool for ``registry``'s cpu handlers (None when it has none), started."""
        pool = self.new_pool(registry)
        if pool is not None:
            await pool.start()
            self.metrics.set_pool(pool.size)
        return pool

    def start_worker(self, registry: Registry, pool: Pool | None) -> Worker:
        """A worker for ``registry`` with the middleware chain, connecting."""
        from ..worker.chain import build

        s = self.settings
        metrics = None if isinstance(self.metrics, NullMetrics) else self.metrics  # a no-op sink: no per-job calls
        chain = build(
            s.middleware, registry.middleware, metrics=metrics, failed=self._failed, file=s.origin("middleware")
        )
        worker = Worker(s, registry, pool, metrics=self.metrics, middleware=chain)
        worker.start()
        return worker

    async def restart_scheduler(self) -> None:
        """Run the schedules of the current handlers (after a reload)."""
        await self.schedules.stop(UNWIND)
        assert self.worker is not None
        self.schedules.start(self.registry, self.worker)

    def _workers(self) -> list[Worker]:
        """The current worker (once started) and a reload's old ones, still finishing jobs."""
        return [w for w in (self.worker, *(r.worker for r in self.reloader.retiring)) if w is not None]

    # -- systemd ----------------------------------------------------------------
    def notify_reloading(self) -> None:
        if self._notifier is not None:
            self._notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def notify_ready(self) -> None:
        if self._notifier is not None:
            self._notifier.ready(f"serving {len(self.registry.functions)} functions")

    async def _announce_ready(self) -> None:
        assert self.worker is not None
        await self.worker.first_connection.wait()
        self.notify_ready()
        if self._notifier is not None:
            interval = self._notifier.watchdog_interval()
            if interval:
                from .systemd import run_watchdog

                self._background.append(asyncio.create_task(run_watchdog(self._notifier, self.healthy)))

    def healthy(self) -> bool:
        """Connected to at least one server, and the pool (if any) is whole."""
        return self.worker is not None and self.worker.connected > 0 and (self.pool is None or self.pool.healthy)

    async def _start_metrics(self, prometheus: Metrics) -> None:
        from ..metrics.prometheus import serve

        assert self.settings.metrics is not None
        host, port = parse_address(self.settings.metrics, default_host="127.0.0.1")
        self._metrics_server = await serve(prometheus, host, port, self.healthy)
        log.info("metrics.listening", address=f"{host}:{port}")

    # -- shutdown -------------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop all that :meth:`startup` started, within the grace period (a second signal cancels it)."""
        started = time.monotonic()
        self._deadline = started + self.settings.grace_period
        # 0. Tell systemd we are stopping, and stop the watchdog pings with it.
        for task in self._background:
            task.cancel()
        if self._notifier is not None:
            self._notifier.stopping()
        await self.schedules.stop(UNWIND)
        # 1. Take no new job, and hand back the jobs that only wait for a retry: another worker can
        #    run them, and a backoff of minutes must not hold the shutdown for its grace period.
        handed_back = 0
        for w in self._workers():
            w.stop_taking_jobs()  # now, not after the old workers below have drained
            handed_back += w.hand_back_retries()
        if handed_back:
            log.info("server.retries_handed_back", count=handed_back)
        # 2-4. A reload's old workers, still finishing jobs, drain and stop like the current one
        #      (_stop_worker), with their pools.
        await self.reloader.drain(self._wait_for_jobs, self._stop_old_worker)
        worker = self.worker
        if worker is not None:
            await self._stop_worker(worker, self.pool)
        # 5. Let the failed-job records still being written become durable, within the time
        #    left: a store slower than that (a hung disk) is given up on, and logged.
        if self._failed is not None:
            await self._failed.flush(self._time_left())
        # 6. Stop the pool processes (killed already, unless the pool never served), their
        #    forkserver and resource tracker.
        if self.pool is not None:
            await self.pool.close(timeout=self._time_left())
        # 7. The metrics endpoint, the local gearmand we started, the pid file.
        if self._metrics_server is not None:
            self._metrics_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._metrics_server.wait_closed(), self._time_left())
        if self._local is not None:
            await self._local.stop(self._time_left())
        if self._pidfile is not None:
            self._pidfile.release()
        # 8. No longer the running worker: a Client() made afterwards in this process reads the
        #    settings files again (a server run in-process, as the tests do).
        activate(None)
        log.info("server.stopped", duration=round(time.monotonic() - started, 3))

    async def _stop_worker(self, worker: Worker, pool: Pool | None) -> None:
        # 2. Let in-flight jobs finish, for what is left of the grace period (a
        #    second signal cuts it short: serve()).
        await self._wait_for_jobs(worker)
        # 3. Past the grace period: cancel async jobs and kill pool processes
        #    still working.  Nothing is reported for them...
        abandoned = worker.abandon()
        if pool is not None:
            pool.kill_all()
        await asyncio.sleep(0)  # let the cancelled jobs unwind
        # 4. ...so when we close the connections gearmand re-queues them
        #    for another worker (at-least-once delivery).  A server that does not
        #    take what is queued for it (hung) within the time left has its
        #    connection dropped instead.
        await worker.close(self._time_left())
        if abandoned:
            log.warning("server.jobs_handed_back", count=abandoned)

    async def _stop_old_worker(self, worker: Worker, pool: Pool | None) -> None:
        await self._stop_worker(worker, pool)
        if pool is not None:
            # The current pool's processes come from the same forkserver: step 6 stops it.
            await pool.close(stop_helpers=False, timeout=self._time_left())

    async def _wait_for_jobs(self, worker: Worker) -> None:
        remaining = self._deadline - time.monotonic()
        if worker.idle.is_set() or remaining <= 0:
            return  # nothing to wait for, or no time left to wait (nor a draining line to log)
        log.info("server.draining", running=worker.running, grace=self.settings.grace_period)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.idle.wait(), remaining)

    def _time_left(self) -> float:
        """Seconds a shutdown step may wait: what is left of the grace period, at least :data:`LAST_STEP`."""
        return max(self._deadline - time.monotonic(), LAST_STEP)

    def stop_now(self) -> None:
        """A forced stop: only what must not be left undone, at once (nothing here waits on a peer or a disk).

        Running jobs are cancelled and their connections dropped, so gearmand
        gives them to another worker; pool processes are killed; the pid file
        is removed; the local gearmand is stopped.  The forkserver and the
        resource tracker exit with us.
        """
        for task in self._background:
            task.cancel()
        self.schedules.cancel()
        handed_back = 0
        for worker, pool in ((self.worker, self.pool), *((r.worker, r.pool) for r in self.reloader.retiring)):
            if pool is not None:
                pool.kill_all()
            if worker is not None:
                handed_back += worker.abandon()
                worker.drop()
        if handed_back:
            log.warning("server.jobs_handed_back", count=handed_back)
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._pidfile is not None:
            self._pidfile.release()
        if self._local is not None:
            self._local.stop_now(FORCED_GEARMAND_TIMEOUT)
        log.warning("server.stopped", forced=True)


def _notifier() -> Any:
    try:
        from .systemd import Notifier
    except ImportError:
        return None
    return Notifier.from_env()


def _prometheus() -> Metrics | None:
    try:
        from ..metrics.prometheus import Metrics
    except ImportError:  # prometheus-client not installed: metrics are optional
        return None
    return Metrics()
