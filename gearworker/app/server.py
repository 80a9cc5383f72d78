"""The worker process's lifecycle, in one place: ``startup()`` → serve → ``shutdown()``.

Modelled on uvicorn: signal handlers only set events, and ``serve()`` is a
plain coroutine that tests drive without signals.  Each phase has its bound:

- a stop signal (:attr:`Server.should_exit`) cancels ``startup()``: nothing
  runs yet that needs time to finish, and a handler module that hangs at
  import in a pool process would hang it for good; ``shutdown()`` then
  stops what had started;
- ``shutdown()`` lasts the grace period: each of its steps waits at most for
  what is left of it (and :data:`LAST_STEP` once it is over), then gives up
  on the hung server, disk or process and goes on;
- a second signal (:attr:`Server.force_exit`) cancels whichever phase runs,
  and :meth:`Server.stop_now` does only what must not be left undone: pool
  processes killed, connections dropped (gearmand re-queues their jobs), the
  pid file removed, the local gearmand stopped.  The command line's server
  also ends the process with ``os._exit`` should that, or the exit after it,
  take longer than :data:`FORCED_EXIT_TIMEOUT`.

SIGHUP reloads the handlers without downtime (:class:`~gearworker.app.reload.Reloader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from ..address import parse_address
from ..config import Settings, activate
from ..logs import flush as flush_logs
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

#: Seconds a step of the shutdown still gets once the grace period is over: a healthy server's
#: connection closes (what was queued for it written) in far less; a hung one is given up on.
LAST_STEP = 0.5
#: Seconds a phase cut short by a signal gets to unwind: its waits give way to a cancel at once,
#: this bounds one that would not.
UNWIND = 0.5
#: After a second signal: seconds until ``os._exit`` ends a process whose forced stop or exit hangs.
FORCED_EXIT_TIMEOUT = 1.0
#: Seconds the local gearmand gets to exit on SIGTERM in a forced stop, before SIGKILL.
FORCED_GEARMAND_TIMEOUT = 0.3


class Server:
    """Runs a :class:`Worker` with its pool, pid file, metrics and systemd notifications."""

    def __init__(self, settings: Settings, registry: Registry, *, hard_exit: bool = False) -> None:
        self.settings = settings
        self.registry = registry
        self.should_exit = asyncio.Event()
        self.force_exit = asyncio.Event()
        #: On a second signal, also end the process with os._exit should the forced stop hang
        #: (the command line's server; never one a test runs in its own process).
        self.hard_exit = hard_exit
        self._exit_armed = False
        self._deadline = 0.0  # the end of the grace period, monotonic; set when shutdown() begins
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

    def handle_signal(self, signum: int) -> None:
        """First signal: drain gracefully.  Second: stop at once."""
        if self.should_exit.is_set():
            log.warning("server.force_exit", signal=signal.Signals(signum).name)
            self.force_exit.set()
            if self.hard_exit and not self._exit_armed:
                self._exit_armed = True
                exit_after(FORCED_EXIT_TIMEOUT)
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

    def exit_on_stop_signal(self, code: int) -> None:
        """From now on SIGTERM and SIGINT end the process at once with ``code``, and SIGHUP is ignored.

        For once :meth:`serve` has returned and only the process's exit is
        left: the loop's close would give the signals their default action
        back, and a stop sent then would kill the process (exit -15).
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)  # else the loop's close resets what is set here
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: _exit_now(code))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

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
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.cancel()
            # asyncio.wait: a cancel of our own (a second signal) is not swallowed with the scheduler's.
            await asyncio.wait({scheduler}, timeout=UNWIND)
            if scheduler.done() and not scheduler.cancelled():
                scheduler.exception()  # retrieved: it ended as it may

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
        """Stop all that :meth:`startup` started, within the grace period (a second signal cancels it)."""
        started = time.monotonic()
        self._deadline = started + self.settings.grace_period
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
        if self._scheduler is not None:
            self._scheduler.cancel()
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


def exit_after(seconds: float) -> None:
    """End the process with ``os._exit(0)`` in ``seconds`` unless it has exited by then (a daemon thread).

    A forced stop's last resort, when something will not give way (a thread
    the exit waits for, a task that swallows its cancel).  Nothing is left
    behind: pool processes and the local gearmand die with us
    (PR_SET_PDEATHSIG), gearmand re-queues the jobs of our connections; a pid
    file left is stale, and replaced at the next start.
    """

    def run() -> None:
        time.sleep(seconds)
        log.error("server.exit_hung", waited=seconds)
        _exit_now(0)

    threading.Thread(target=run, name="forced exit", daemon=True).start()


def _exit_now(code: int) -> None:
    flush_logs()
    os._exit(code)


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
