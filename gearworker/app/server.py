"""The worker process's lifecycle, in one place: ``startup()`` → serve → ``shutdown()``.

Modelled on uvicorn: signal handlers only set events, ``serve()`` is a plain
coroutine that tests drive without signals, and a second signal skips the
grace period.  SIGHUP reloads the handlers without downtime
(:class:`~gearworker.app.reload.Reloader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
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

if TYPE_CHECKING:
    from ..metrics.prometheus import Metrics

__all__ = ["Server"]

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
        self._scheduler: asyncio.Task[None] | None = None
        self._failed: Any = None  # the RecordFailures middleware, when failed_jobs is set
        self.reloader = Reloader(self)

    # -- the whole life -----------------------------------------------------
    async def serve(self) -> int:
        """Start, run until :attr:`should_exit` is set, shut down; return the exit code."""
        try:
            await self.startup()
            self._background.append(asyncio.create_task(self.reloader.run(self.should_exit)))
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

    def install_signal_handlers(self, early: Sequence[int] = ()) -> None:
        """Route SIGTERM and SIGINT to :meth:`handle_signal`, SIGHUP to a reload.

        ``early`` are the signals caught before the loop ran
        (:class:`gearworker.app.launch.EarlySignals`): replayed now.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reloader.request)
        for signum in early:
            if signum == signal.SIGHUP:
                self.reloader.request()  # done once started
            else:
                self.handle_signal(signum)

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
        self.pool = await self.start_pool(self.registry)
        self.worker = self.start_worker(self.registry, self.pool)
        self._start_scheduler()
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

    async def start_pool(self, registry: Registry) -> Pool | None:
        """A pool for ``registry``'s cpu handlers (None when it has none), started."""
        if not any(h.cpu for h in registry.handlers.values()):
            return None
        pool = Pool(self.settings, metrics=self.metrics)
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

    def _start_scheduler(self) -> None:
        from ..schedule.runner import run_schedules, scheduled_functions

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
                settings=self.settings,
                own=self._own_connections,
                max_age=self.settings.schedule_max_age,
            )

        self._scheduler = asyncio.create_task(run())

    def _own_connections(self, server: str, function: str) -> int:
        """This process's live connections to ``server`` registered for ``function`` (old ones after a reload too)."""
        wire = function.encode()
        workers = [w for w in (self.worker, *(r.worker for r in self.reloader.retiring)) if w is not None]
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

    async def restart_scheduler(self) -> None:
        """Run the schedules of the current handlers (after a reload)."""
        await self._stop_scheduler()
        self._start_scheduler()

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
        started = time.monotonic()
        # 0. Tell systemd we are stopping, and stop the watchdog pings with it.
        for task in self._background:
            task.cancel()
        if self._notifier is not None:
            self._notifier.stopping()
        await self._stop_scheduler()
        # 1. Take no new job, and hand back the jobs that only wait for a retry: another worker can
        #    run them, and a backoff of minutes must not hold the shutdown for its grace period.
        handed_back = 0
        for w in (self.worker, *(r.worker for r in self.reloader.retiring)):
            if w is not None:
                w.stop_taking_jobs()  # now, not after the old workers below have drained
                handed_back += w.hand_back_retries()
        if handed_back:
            log.info("server.retries_handed_back", count=handed_back)
        # A reload's old workers, still finishing jobs, drain like the current one.
        await self.reloader.drain(
            lambda w: self._wait_for_jobs(w, started), lambda w, p: self._stop_worker(w, p, started)
        )
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
        from ..metrics.prometheus import Metrics
    except ImportError:  # prometheus-client not installed: metrics are optional
        return None
    return Metrics()
