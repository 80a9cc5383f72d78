"""The process pool for ``cpu=True`` handlers.

The pool is made of single-process :class:`ProcessPoolExecutor` slots rather
than one executor of N processes.  With one shared executor, a child that
dies (``os._exit``, a segfault, the OOM killer, our own timeout kill) breaks
the whole executor and fails every job in it; with one executor per slot the
damage stays with the one job that slot was running, and only that slot is
rebuilt.

Recycling: a slot's process is replaced after ``max_tasks_per_child`` jobs
or once its resident memory passes ``max_child_rss`` MiB (read from
``/proc`` after each job), by swapping in a fresh single-process executor
while the slot is idle.  ``ProcessPoolExecutor``'s own ``max_tasks_per_child``
is not used: it can deadlock under load (CPython gh-115634).

Children are started by a ``forkserver`` (forking the parent would copy its
event loop, threads and possibly libvips state: pyvips hangs in a forked
child once the parent has run libvips), die with their parent
(``PR_SET_PDEATHSIG``, so a SIGKILLed worker leaves no orphan), and ignore SIGINT (a terminal's Ctrl-C reaches the
whole process group; the parent decides what happens to running jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection as PipeEnd

import structlog

from ..config import Settings
from ..metrics import NO_METRICS, MetricsSink
from . import mailbox, pool_child
from .job import CpuJobSpec, Reporter
from .mailbox import Mailbox
from .pool_child import FuncRef

__all__ = ["ChildDied", "Pool", "PoolTimeout"]

log = structlog.get_logger("gearworker.pool")


class ChildDied(Exception):
    """The pool process running the job died."""


class PoolTimeout(Exception):
    """The job ran past its timeout and its pool process was killed."""


class CpuResult(tuple[bool, bytes]):
    """``(ok, result or "Type: message")``; ``retryable`` is False when the handler raised NoRetry."""

    retryable: bool

    def __new__(cls, ok: bool, data: bytes, retryable: bool = True) -> CpuResult:
        self = super().__new__(cls, (ok, data))
        self.retryable = retryable
        return self


@dataclass(slots=True, eq=False)
class _Channel:
    """One slot's ways to its process besides the executor: the report pipe and the mailbox.

    Reports: its process writes, a thread of ours reads.  A pipe per slot, not
    one queue for all: a process SIGKILLed in the middle of a write (our
    timeout, the OOM killer) would leave a shared queue's inter-process lock
    held forever and every other process blocked on it.  Here it can only
    garble its own pipe, which is thrown away with the slot.

    The mailbox carries big workloads and results (see :mod:`.mailbox`); it
    too is new with each new process.
    """

    reader: PipeEnd
    writer: PipeEnd
    mailbox: Mailbox
    thread: threading.Thread | None = None
    _closing: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    def close(self) -> None:
        """Close our copy of the write end (once the process is gone too, the reader thread sees EOF and
        ends) and the mailbox.  Once: Pool.close()'s thread and a dead job's slot replacement may both call
        it at the same time, and a second close of a descriptor number may hit one reused meanwhile."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        self.writer.close()
        self.mailbox.close()


@dataclass(slots=True)
class _Call:
    """One job running in a slot: where its reports go, and its end marker."""

    end: asyncio.Future[None]  # set when the child's "end" report, sent after all others, arrives
    on_report: Reporter


@dataclass(slots=True)
class _Slot:
    index: int
    executor: ProcessPoolExecutor
    channel: _Channel
    busy: bool = False
    jobs: int = 0  # jobs run by the current process


def _submit(slot: _Slot, ref: FuncRef, spec: CpuJobSpec) -> Future[tuple[bool, bytes | int, bool]]:
    """Hand ``spec`` to the slot's process, a big workload through its mailbox."""
    if mailbox.fits(len(spec.workload)):
        with contextlib.suppress(OSError):  # no memory to grow it: the pipe still works
            spec = replace(spec, workload=b"", mailbox=slot.channel.mailbox.put(spec.workload))
    return slot.executor.submit(pool_child.run, ref, spec)


class Pool:
    """``size`` single-process slots; :meth:`run` runs one job in a free slot."""

    def __init__(self, settings: Settings, *, metrics: MetricsSink = NO_METRICS) -> None:
        self.size = settings.processes
        self._metrics = metrics
        self.restarts = 0
        self._ctx = multiprocessing.get_context("forkserver")
        self._settings = settings
        self._max_tasks = settings.max_tasks_per_child
        self._max_rss = settings.max_child_rss * 1024 * 1024 if settings.max_child_rss else None
        self.recycled = 0
        self._slots: list[_Slot] = []
        self._calls: dict[int, _Call] = {}  # jobs running in a slot, by token
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def free(self) -> int:
        return sum(1 for s in self._slots if not s.busy)

    @property
    def healthy(self) -> bool:
        return not self._closed and len(self._slots) == self.size

    def _new_slot_parts(self) -> tuple[ProcessPoolExecutor, _Channel]:
        reader, writer = self._ctx.Pipe(duplex=False)
        channel = _Channel(reader, writer, Mailbox())
        executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=self._ctx,
            initializer=pool_child.init,
            initargs=(writer, channel.mailbox, self._settings, os.getpid()),
        )
        channel.thread = threading.Thread(target=self._read_reports, args=(reader,), name="pool reports", daemon=True)
        channel.thread.start()
        return executor, channel

    async def start(self) -> None:
        """Start every slot's process and wait until each has loaded the handlers.

        No time limit: a handler module that hangs at import in a pool process
        hangs this too.  Cancelled (a stop signal) or failed, it kills the
        processes it started before it returns.
        """
        self._loop = asyncio.get_running_loop()
        self._slots = [_Slot(i, *self._new_slot_parts()) for i in range(self.size)]
        started = time.monotonic()
        starts = [asyncio.ensure_future(self._start_slot(s)) for s in self._slots]
        try:
            pids = await asyncio.gather(*starts)
        except BaseException:
            for start in starts:
                start.cancel()  # a slot's retry must not start a process after the kill below
            killed = self.kill_all()
            log.warning("pool.start_stopped", killed=killed, duration=round(time.monotonic() - started, 3))
            raise
        log.info("pool.started", processes=self.size, pids=list(pids), duration=round(time.monotonic() - started, 3))

    async def _start_slot(self, slot: _Slot, attempts: int = 3) -> int:
        """Start ``slot``'s process; one killed while it starts (OOM killer, an operator) is replaced.

        Without this, a pool process killed during start-up made the whole
        worker exit with a BrokenProcessPool traceback (found by the chaos test).
        """
        assert self._loop is not None
        for attempt in range(1, attempts + 1):
            try:
                return await self._loop.run_in_executor(slot.executor, pool_child.noop)
            except BrokenProcessPool:
                if attempt == attempts:
                    raise
                self._replace(slot, kill=False)
        raise AssertionError("unreachable")

    def _read_reports(self, reader: PipeEnd) -> None:
        # Blocking reads belong in a thread; hand each report to the loop.
        try:
            while True:
                item = reader.recv()
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._dispatch, item)
        except (EOFError, OSError, RuntimeError):  # every writer gone, or the loop closed
            pass
        except Exception:  # a process killed mid-write left a garbled message: the slot is being replaced
            log.warning("pool.report_garbled", exc_info=True)
        finally:
            reader.close()

    def _dispatch(self, item: tuple[int, str, tuple[bytes, ...]]) -> None:
        token, kind, args = item
        call = self._calls.get(token)
        if call is None:
            return  # a report of a job already ended (timed out, its process killed)
        if kind == "end":
            if not call.end.done():
                call.end.set_result(None)
        else:
            call.on_report(kind, args)

    async def run(
        self, func: Callable[..., object], spec: CpuJobSpec, timeout: float | None, on_report: Reporter
    ) -> CpuResult:
        """Run ``func`` on ``spec`` in a free slot; ``on_report`` gets its progress reports, in order.

        Returns ``(ok, result_or_message)`` (with ``.retryable``); raises :class:`PoolTimeout` or
        :class:`ChildDied`, after which the slot has been replaced.  The caller
        must only call this when :attr:`free` > 0 (the worker never grabs a CPU
        job it cannot start).
        """
        slot = next(s for s in self._slots if not s.busy)
        slot.busy = True
        loop = asyncio.get_running_loop()
        end = loop.create_future()
        self._calls[spec.token] = _Call(end, on_report)
        ref = pool_child.reference(func)
        try:
            try:
                fut = _submit(slot, ref, spec)
            except BrokenProcessPool:
                # The slot's process died while idle (OOM killer, a stray kill):
                # nothing of this job ran yet, so run it in a fresh process
                # rather than fail it (or, uncaught, leave it hanging forever).
                self._replace(slot, kill=False)
                fut = _submit(slot, ref, spec)
            try:
                async with asyncio.timeout(timeout):
                    ok, data, retryable = await asyncio.wrap_future(fut)
            except asyncio.CancelledError:
                # Shutdown past its grace period, or the job's connection dropped:
                # the process must stop too, or the slot would stay busy with a
                # job nobody waits for.
                self._replace(slot, kill=True)
                raise
            except TimeoutError:
                self._replace(slot, kill=True)
                raise PoolTimeout(f"ran past its {timeout:g}s timeout; its pool process was killed") from None
            except BrokenProcessPool as e:
                code = self._replace(slot, kill=False)
                raise ChildDied(f"pool process died ({_exit_reason(code)})") from e
            # Every report was written before the result; wait (briefly) until
            # the reader thread has passed them on, so progress precedes the result.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await end
            if isinstance(data, int):
                data = slot.channel.mailbox.take(data)
            self._after_job(slot)
            return CpuResult(ok, data, retryable)
        finally:
            del self._calls[spec.token]
            slot.busy = False

    def _after_job(self, slot: _Slot) -> None:
        """Recycle the slot's process when it has run its share of jobs or grown too big."""
        slot.jobs += 1
        reason = None
        if self._max_tasks is not None and slot.jobs >= self._max_tasks:
            reason = "max_tasks_per_child"
        elif self._max_rss is not None:
            pids = list(getattr(slot.executor, "_processes", {}) or {})
            rss = max((_rss(pid) for pid in pids), default=0)
            if rss > self._max_rss:
                reason = "max_child_rss"
        if reason is None or self._closed:
            return
        old = slot.executor
        pids = list(getattr(old, "_processes", {}) or {})
        # Idle now: the old process gets the executor's stop sentinel and exits
        # by itself; its management thread reaps it.  Nothing waits here.
        old.shutdown(wait=False)
        slot.channel.close()
        slot.executor, slot.channel = self._new_slot_parts()
        slot.jobs = 0
        self.recycled += 1
        # Start the new process now, not when the next job arrives.
        assert self._loop is not None
        self._loop.run_in_executor(slot.executor, pool_child.noop)
        log.info("pool.recycled", slot=slot.index, reason=reason, pids=pids)

    def _replace(self, slot: _Slot, *, kill: bool) -> int | None:
        """Swap in a fresh executor for ``slot``; return the dead child's exit code."""
        old = slot.executor
        processes = dict(getattr(old, "_processes", {}) or {})
        if kill:
            for pid in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        # The executor's own thread joins its dead processes: let it finish first.
        # A forkserver child's exit code can be read once; two threads polling it
        # at once leave the loser with 255 ("exit code 255" for a SIGKILL, a
        # flaky test_pool failure in CI).
        manager = getattr(old, "_executor_manager_thread", None)
        if manager is not None:
            manager.join(1.0)
        code = None
        for proc in processes.values():
            proc.join(1.0)
            code = proc.exitcode
        old.shutdown(wait=False, cancel_futures=True)
        slot.channel.close()
        if self._closed:  # close() killed it: no new process for a pool that is going away
            return code
        slot.executor, slot.channel = self._new_slot_parts()
        slot.jobs = 0
        self.restarts += 1
        self._metrics.pool_restart()
        log.warning("pool.restarted", slot=slot.index, exitcode=code, killed=kill)
        return code

    def kill_all(self) -> int:
        """SIGKILL every pool process (shutdown past the grace period: their jobs are handed back)."""
        return _kill(self.pids())

    def pids(self) -> list[int]:
        """The pids of the pool processes now running."""
        return [pid for slot in self._slots for pid in (getattr(slot.executor, "_processes", {}) or {})]

    async def close(self, *, stop_helpers: bool = True, timeout: float | None = None) -> None:
        """Stop every pool process, the report reader and (unless another pool still uses it) the forkserver.

        Processes that have not exited within ``timeout`` seconds are killed.
        The waiting is done by a daemon thread, not the loop's executor: a
        process that never exits must not hold the loop's (nor the
        interpreter's) exit.
        """
        self._closed = True
        slots, self._slots = self._slots, []
        pids = [pid for slot in slots for pid in (getattr(slot.executor, "_processes", {}) or {})]

        def stop() -> None:
            for slot in slots:
                slot.executor.shutdown(wait=True, cancel_futures=True)
                slot.channel.close()
            for slot in slots:
                if slot.channel.thread is not None:
                    slot.channel.thread.join(2.0)

        if not await _in_thread(stop, timeout, name="pool close"):
            log.warning("pool.close_timeout", timeout=timeout, pids=pids)
            _kill(pids)  # the thread's joins end once they are gone
        if stop_helpers:
            # It exits once its children have: the kill above guarantees it does not wait for one.
            _stop_helpers()


def _kill(pids: list[int]) -> int:
    """SIGKILL ``pids``; return how many were still there."""
    killed = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


async def _in_thread(func: Callable[[], None], timeout: float | None, *, name: str) -> bool:
    """Run ``func`` in a new daemon thread; True once it returned, False if ``timeout`` seconds passed first."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            func()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(settle)

    threading.Thread(target=run, name=name, daemon=True).start()
    finished, _ = await asyncio.wait({done}, timeout=timeout)
    return bool(finished)


def _stop_helpers() -> None:
    """Stop multiprocessing's forkserver now, not at interpreter exit.

    It is a child of this process; stopping it here means the worker has no
    child left when it exits.  (The resource tracker is left to exit on its own
    when we do.)
    """
    with contextlib.suppress(Exception):
        multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]


def _rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
