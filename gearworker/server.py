"""The worker process's lifecycle, in one place: ``startup()`` → serve → ``shutdown()``.

Modelled on uvicorn: signal handlers only set events, ``serve()`` is a plain
coroutine that tests drive without signals, and a second signal skips the
grace period.

SIGHUP reloads the handlers without downtime (:meth:`Server.reload`): the
handler modules are imported afresh; if that fails the old handlers stay and
the error is logged.  Otherwise a new pool and a new :class:`Worker` start
and register first, then the old worker stops taking jobs, lets the jobs it
runs finish on the old code, and closes with its pool.  The pid never
changes.  While old jobs finish, the old and new workers' limits apply
separately (up to twice ``concurrency`` and ``processes`` for that time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import structlog

from . import config
from .address import parse_address
from .config import Settings
from .errors import ConfigError
from .launch import EarlySignals
from .localserver import LocalGearmand
from .metrics import NO_METRICS, MetricsSink, NullMetrics
from .pidfile import PidFile
from .worker.pool import Pool
from .worker.registry import Registry
from .worker.worker import Worker

if TYPE_CHECKING:
    from .metrics.prometheus import Metrics

__all__ = ["EarlySignals", "Server"]

log = structlog.get_logger("gearworker.server")


class Server:
    """Runs a :class:`Worker` with its pool, pid file, metrics and systemd notifications."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.should_exit = asyncio.Event()
        self.force_exit = asyncio.Event()
        self.pool: Pool | None = None
        self.worker: Worker | None = None
        self.metrics: MetricsSink = NO_METRICS
        self._local: LocalGearmand | None = None
        self._pidfile: PidFile | None = None
        self._notifier: Any = None
        self._background: list[asyncio.Task[Any]] = []
        self._metrics_server: Any = None
        self.reload_requested = asyncio.Event()
        self.reloads = 0  # successful reloads
        self._retiring: list[tuple[Worker, Pool | None, asyncio.Task[None]]] = []
        self._scheduler: asyncio.Task[None] | None = None
        self._failed: Any = None  # the RecordFailures middleware, when failed_jobs is set
        self._reload_lock = asyncio.Lock()

    # -- the whole life -----------------------------------------------------
    async def serve(self) -> int:
        """Start, run until :attr:`should_exit` is set, shut down; return the exit code."""
        try:
            await self.startup()
            self._background.append(asyncio.create_task(self._reload_on_request()))
            await self.should_exit.wait()
        finally:
            await self.shutdown()
        return 0

    def handle_signal(self, signum: int) -> None:
        """First signal: drain gracefully.  Second: stop at once."""
        if self.should_exit.is_set():
            log.warning("server.force_exit", signal=signal.Signals(signum).name)
            self.force_exit.set()
        else:
            log.info("server.stopping", signal=signal.Signals(signum).name, grace=self.settings.grace_period)
            self.should_exit.set()

    def install_signal_handlers(self, early: EarlySignals | None = None) -> None:
        """Route SIGTERM and SIGINT to :meth:`handle_signal`; replay those ``early`` caught before the loop ran."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        if early is not None:
            for signum in early.received:
                if signum == signal.SIGHUP:
                    self.request_reload()  # done once started
                else:
                    self.handle_signal(signum)

    def request_reload(self) -> None:
        """SIGHUP: reload the handlers (in :meth:`serve`'s task, not in the signal handler)."""
        log.info("server.reload_requested")
        self.reload_requested.set()

    async def _reload_on_request(self) -> None:
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            if self.should_exit.is_set():
                return
            await self.reload()

    # -- startup --------------------------------------------------------------
    async def startup(self) -> None:
        s = self.settings
        config.activate(s)  # what handlers see through config.active()
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
            from .failed import RecordFailures, open_store

            self._failed = RecordFailures(open_store(s.failed_jobs, workload_limit=s.failed_workload_limit), s.servers)
        self.pool = await self._start_pool(self.registry)
        self.worker = self._start_worker(self.registry, self.pool)
        self._start_scheduler()
        if prometheus is not None:
            await self._start_metrics(prometheus)
        self._background.append(asyncio.create_task(self._announce_ready()))
        log.info(
            "server.started",
            pid=os.getpid(),
            servers=s.servers,
            functions=sorted(self.registry.functions),
            processes=self.pool.size if self.pool else 0,
            concurrency=s.concurrency,
        )

    async def _start_pool(self, registry: Registry) -> Pool | None:
        if not any(h.cpu for h in registry.handlers.values()):
            return None
        pool = Pool(self.settings, metrics=self.metrics)
        await pool.start()
        self.metrics.set_pool(pool.size)
        return pool

    def _start_worker(self, registry: Registry, pool: Pool | None) -> Worker:
        from .middleware import build

        s = self.settings
        metrics = None if isinstance(self.metrics, NullMetrics) else self.metrics  # a no-op sink: no per-job calls
        chain = build(
            s.middleware, registry.middleware, metrics=metrics, failed=self._failed, file=s.origin("middleware")
        )
        worker = Worker(s, registry, pool, metrics=self.metrics, middleware=chain)
        worker.start()
        return worker

    def _start_scheduler(self) -> None:
        from .scheduler import run_schedules, scheduled_functions

        assert self.worker is not None
        worker = self.worker
        functions = scheduled_functions(self.registry.handlers.values())
        if not functions:
            return

        async def run() -> None:
            # Only a worker that gearmand lists can be elected: wait until it is connected.
            await worker.first_connection.wait()
            await run_schedules(
                self.settings.servers,
                functions,
                worker.client_id,
                connect_timeout=self.settings.connect_timeout,
                own=self._own_connections,
            )

        self._scheduler = asyncio.create_task(run())

    def _own_connections(self, server: str, function: str) -> int:
        """This process's live connections to ``server`` registered for ``function`` (old ones after a reload too)."""
        wire = function.encode()
        workers = [w for w in (self.worker, *(r[0] for r in self._retiring)) if w is not None]
        return sum(
            1
            for w in workers
            for c in w.connections
            if c.name == server and c.stream is not None and wire in c.group.timeouts
        )

    async def _stop_scheduler(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._scheduler
            self._scheduler = None

    # -- reload (SIGHUP) ------------------------------------------------------
    async def reload(self) -> bool:
        """Load the handlers again and serve new jobs with them; jobs running now finish on the old code.

        Returns False (and logs ``server.reload_failed``) when the new
        handlers cannot be loaded: the old ones keep serving.
        """
        async with self._reload_lock:
            started = time.monotonic()
            if self._notifier is not None:  # systemctl shows "reloading" until READY=1
                self._notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                return await self._reload(started)
            finally:
                if self._notifier is not None:
                    self._notifier.ready(f"serving {len(self.registry.functions)} functions")

    async def _reload(self, started: float) -> bool:
        from .cli import load_handlers
        from .reload import changes, reimport

        try:
            registry = reimport(lambda: load_handlers(self.settings))
        except ConfigError as e:
            log.error("server.reload_failed", error=str(e), kept=sorted(self.registry.functions))
            return False
        try:
            pool = await self._start_pool(registry)
        except Exception as e:
            log.error(
                "server.reload_failed", error=f"pool: {type(e).__name__}: {e}", kept=sorted(self.registry.functions)
            )
            return False
        old_worker, old_pool, old_registry = self.worker, self.pool, self.registry
        assert old_worker is not None
        # The new worker registers before the old one lets go: no moment
        # without a worker for any function.
        self.registry, self.pool = registry, pool
        self.worker = self._start_worker(registry, pool)
        old_worker.stop_taking_jobs()
        retire = asyncio.create_task(self._retire(old_worker, old_pool))
        self._retiring.append((old_worker, old_pool, retire))
        await self._stop_scheduler()
        self._start_scheduler()
        self.reloads += 1
        log.info(
            "server.reloaded",
            pid=os.getpid(),
            duration=round(time.monotonic() - started, 3),
            still_running=old_worker.running,
            **changes(old_registry, registry),
        )
        return True

    async def _retire(self, worker: Worker, pool: Pool | None) -> None:
        """Let an old worker's jobs finish, then close its connections and pool."""
        await worker.idle.wait()
        try:
            await worker.close()
            if pool is not None:
                # The new pool's processes come from the same forkserver: keep it.
                await pool.close(stop_helpers=False)
        except Exception as e:  # nothing waits for this task: say what went wrong
            log.error("server.retire_failed", error=f"{type(e).__name__}: {e}", exc_info=True)
        self._retiring = [r for r in self._retiring if r[0] is not worker]
        log.info("server.old_handlers_retired")

    async def _announce_ready(self) -> None:
        assert self.worker is not None
        await self.worker.first_connection.wait()
        if self._notifier is not None:
            self._notifier.ready(f"serving {len(self.registry.functions)} functions")
            interval = self._notifier.watchdog_interval()
            if interval:
                from .systemd import run_watchdog

                self._background.append(asyncio.create_task(run_watchdog(self._notifier, self.healthy)))

    def healthy(self) -> bool:
        """Connected to at least one server, and the pool (if any) is whole."""
        return self.worker is not None and self.worker.connected > 0 and (self.pool is None or self.pool.healthy)

    async def _start_metrics(self, prometheus: Metrics) -> None:
        from .metrics.prometheus import serve

        assert self.settings.metrics is not None
        host, port = parse_address(self.settings.metrics, default_host="127.0.0.1")
        self._metrics_server = await serve(prometheus, host, port, self.healthy)
        log.info("metrics.listening", address=f"{host}:{port}")

    # -- shutdown -------------------------------------------------------------
    async def shutdown(self) -> None:
        started = time.monotonic()
        # 0. Tell systemd we are stopping, and stop the watchdog pings with it.
        for task in self._background:
            task.cancel()
        if self._notifier is not None:
            self._notifier.stopping()
        await self._stop_scheduler()
        if self.worker is not None:
            self.worker.stop_taking_jobs()  # now, not after the old workers below have drained
        for old_worker, old_pool, task in list(self._retiring):
            # A reload's old worker, still finishing jobs: it drains like the current one
            # (logged, the same grace period, a second signal cuts it short), and its own
            # task closes it once its jobs have ended.
            await self._wait_for_jobs(old_worker, started)
            if old_worker.idle.is_set():
                await task
            else:  # past the grace period, or forced: stop it like the current worker
                task.cancel()
                await self._stop_worker(old_worker, old_pool, started)
                if old_pool is not None:
                    await old_pool.close(stop_helpers=False)
        self._retiring = []
        worker = self.worker
        if worker is not None:
            await self._stop_worker(worker, self.pool, started)
        if self._failed is not None:
            await self._failed.flush()
        # 5. Stop the pool processes, their forkserver and resource tracker.
        if self.pool is not None:
            await self.pool.close()
        # 6. The metrics endpoint, the local gearmand we started, the pid file.
        if self._metrics_server is not None:
            self._metrics_server.close()
            with contextlib.suppress(Exception):
                await self._metrics_server.wait_closed()
        if self._local is not None:
            await self._local.stop()
        if self._pidfile is not None:
            self._pidfile.release()
        log.info("server.stopped", duration=round(time.monotonic() - started, 3))

    async def _stop_worker(self, worker: Worker, pool: Pool | None, started: float) -> None:
        # 1. Take no new job: connections with nothing running close now, so
        #    gearmand hands what we grabbed but did not start to other workers.
        worker.stop_taking_jobs()
        # 2. Let in-flight jobs finish, for up to the grace period (a second
        #    signal cuts it short).
        await self._wait_for_jobs(worker, started)
        # 3. Past the grace period: cancel async jobs and kill pool processes
        #    still working.  Nothing is reported for them...
        abandoned = worker.abandon()
        if pool is not None:
            pool.kill_all()
        await asyncio.sleep(0)  # let the cancelled jobs unwind
        # 4. ...so when we close the connections gearmand re-queues them
        #    for another worker (at-least-once delivery).
        await worker.close()
        if abandoned:
            log.warning("server.jobs_handed_back", count=abandoned)

    async def _wait_for_jobs(self, worker: Worker, started: float) -> None:
        remaining = self.settings.grace_period - (time.monotonic() - started)
        if worker.idle.is_set() or remaining <= 0 or self.force_exit.is_set():
            return  # nothing to wait for, or no time left to wait (nor a draining line to log)
        log.info("server.draining", running=worker.running, grace=self.settings.grace_period)
        idle = asyncio.create_task(worker.idle.wait())
        force = asyncio.create_task(self.force_exit.wait())
        try:
            await asyncio.wait({idle, force}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            force.cancel()


def _notifier() -> Any:
    try:
        from .systemd import Notifier
    except ImportError:
        return None
    return Notifier.from_env()


def _prometheus() -> Metrics | None:
    try:
        from .metrics.prometheus import Metrics
    except ImportError:  # prometheus-client not installed: metrics are optional
        return None
    return Metrics()
