"""The worker process's lifecycle, in one place: ``startup()`` → serve → ``shutdown()``.

Modelled on uvicorn: signal handlers only set events, ``serve()`` is a plain
coroutine that tests drive without signals, and a second signal skips the
grace period.
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
from .localserver import LocalGearmand
from .metrics import NO_METRICS, MetricsSink
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

    # -- the whole life -----------------------------------------------------
    async def serve(self) -> int:
        """Start, run until :attr:`should_exit` is set, shut down; return the exit code."""
        try:
            await self.startup()
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
        if early is not None:
            for signum in early.received:
                self.handle_signal(signum)


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
        if any(h.cpu for h in self.registry.handlers.values()):
            self.pool = Pool(s, metrics=self.metrics)
            await self.pool.start()
            self.metrics.set_pool(self.pool.size)
        self.worker = Worker(s, self.registry, self.pool, metrics=self.metrics)
        self.worker.start()
        if prometheus is not None:
            await self._start_metrics(prometheus)
        self._background.append(asyncio.create_task(self._announce_ready()))
        log.info("server.started", pid=os.getpid(), servers=s.servers, functions=sorted(self.registry.functions),
                 processes=self.pool.size if self.pool else 0, concurrency=s.concurrency)

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
        return (
            self.worker is not None
            and self.worker.connected > 0
            and (self.pool is None or self.pool.healthy)
        )

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
        worker = self.worker
        if worker is not None:
            # 1. Take no new job: connections with nothing running close now, so
            #    gearmand hands what we grabbed but did not start to other workers.
            worker.stop_taking_jobs()
            # 2. Let in-flight jobs finish, for up to the grace period (a second
            #    signal cuts it short).
            await self._wait_for_jobs(worker)
            # 3. Past the grace period: cancel async jobs and kill pool processes
            #    still working.  Nothing is reported for them...
            abandoned = worker.abandon()
            if self.pool is not None:
                self.pool.kill_all()
            await asyncio.sleep(0)  # let the cancelled jobs unwind
            # 4. ...so when we close the connections gearmand re-queues them
            #    for another worker (at-least-once delivery).
            await worker.close()
            if abandoned:
                log.warning("server.jobs_handed_back", count=abandoned)
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

    async def _wait_for_jobs(self, worker: Worker) -> None:
        if worker.idle.is_set():
            return
        log.info("server.draining", running=worker.running, grace=self.settings.grace_period)
        idle = asyncio.create_task(worker.idle.wait())
        force = asyncio.create_task(self.force_exit.wait())
        try:
            await asyncio.wait({idle, force}, timeout=self.settings.grace_period, return_when=asyncio.FIRST_COMPLETED)
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


class EarlySignals:
    """Catches SIGTERM and SIGINT from process start until the event loop takes them over.

    Importing handlers and starting the pool take a while; a stop requested
    then (systemd, a test, a chaos monkey) must still be a clean stop, exit 0,
    not death by the default action (found by the chaos test: exit -15).
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: object) -> None:
        self.received.append(signum)
