"""Log lines written in batches, by one ``write`` each: the output under :mod:`gearworker.logs`.

Rendered lines go to a :class:`BatchedOutput` rather than straight to the file:
the first line of a batch starts a :data:`LINGER` timer on the running loop,
and the batch is written with one ``write`` when it fires, or at once when it
holds :data:`MAX_BATCH` lines.  A watchdog thread writes anything older than
100 ms (a loop blocked by a handler) and sleeps while no batch is open; an
``atexit`` hook and :func:`flush` (called on the shutdown path) write what is
left, and where no loop runs (a pool process, start-up, a plain script) every
line is written at once.  Only a SIGKILL can lose lines: those of the last
``LINGER``.

Why a timer rather than the end of each loop turn: a worker serving one job at
a time logs one line per turn, so per-turn batching still made a ``write`` per
job (5.5 us of a 8.8 us line, ``bench.logcost``, lone-job row; one of 7 system
calls per lone job, ``bench.syscalls``).
"""

from __future__ import annotations

import asyncio
import collections
import os
import select
import sys
import threading
import time
import weakref
from typing import TextIO

__all__ = ["LINGER", "MAX_BATCH", "MAX_DELAY", "BatchedOutput", "after_fork", "flush", "outputs"]

#: A buffered line is written at the latest this long after it was logged, even if the loop is blocked.
MAX_DELAY = 0.1
#: Seconds a running loop gathers lines before writing them (well under MAX_DELAY: the watchdog stays idle).
LINGER = 0.02
#: Lines that are written at once, without waiting for the timer: about 30 KiB of job.done lines,
#: under a pipe's 64 KiB buffer, so a slow reader (journald) rarely makes the write block.
MAX_BATCH = 128

#: Every output ever configured in this process, for the atexit hook and :func:`flush`.
_OUTPUTS: weakref.WeakSet[BatchedOutput] = weakref.WeakSet()


class BatchedOutput:
    """Log lines written in batches: every :data:`LINGER` seconds, or every :data:`MAX_BATCH` lines.

    :meth:`line` queues (``deque.append``: atomic, so any thread may log) and,
    for the first line of a batch, asks the running loop to write the queue
    :data:`LINGER` seconds later.  Without a running loop in the calling thread
    it writes at once.
    """

    def __init__(self, fd: int | None = None, stream: TextIO | None = None, *, owns_fd: bool = False) -> None:
        if fd is None and stream is None:
            raise ValueError("BatchedOutput needs a file descriptor or a text stream")
        self._fd = fd
        self._owns_fd = owns_fd  # the log file's descriptor is ours to close; stderr's is not
        self._stream = stream  # only when there is no usable descriptor (e.g. a captured sys.stderr)
        self._lines: collections.deque[bytes] = collections.deque()
        self._write_lock = threading.Lock()  # keeps whole batches in order when two threads write
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop found last time, and its thread
        self._loop_thread = 0
        self.writes = 0  # system calls made: lets tests check the batching
        self.drains = 0
        self._seen = -1  # the drain count the watchdog saw last time there were lines queued
        _OUTPUTS.add(self)

    def line(self, message: bytes) -> None:
        """Queue one line (without its newline); it is written within :data:`LINGER` seconds."""
        lines = self._lines
        lines.append(message)
        if not self._scheduled:
            self._schedule()
        elif len(lines) >= MAX_BATCH:
            self.drain()

    def lines(self, messages: list[bytes]) -> None:
        """Queue several lines at once, as :meth:`line` would one by one."""
        lines = self._lines
        lines.extend(messages)
        if not self._scheduled:
            self._schedule()
        if self._scheduled and len(lines) >= MAX_BATCH:  # (unscheduled: _schedule() wrote them through)
            self.drain()

    def write_lines(self, messages: list[bytes]) -> None:
        """Write several lines now, behind any still queued: lines a caller already gathered into a batch.

        The Runner's ``job.done`` lines wait up to 20 ms for their batch
        already (:data:`gearworker.worker.runner.AFTER_DELAY`); gathering them
        again for :data:`LINGER` cost a second timer wake-up per batch and
        held them twice as long.  With nothing queued they skip the queue too:
        16.7k -> 16.3k instructions a ``job.done`` line (bench.instructions).
        """
        if not messages:
            return
        if self._lines:
            self._lines.extend(messages)  # behind what is queued: drain() writes them all, in order
            self.drain()
            return
        with self._write_lock:  # nothing queued: straight out, without the queue's per-line steps
            self.drains += 1
            self._emit(b"\n".join(messages) + b"\n")

    def _schedule(self) -> None:
        loop = self._loop
        # The cached loop is this thread's running loop if it runs and runs here
        # (one thread runs one loop).  asyncio.get_running_loop() would cost a
        # getpid() system call per loop turn.
        if loop is None or self._loop_thread != threading.get_ident() or not loop.is_running():
            loop = asyncio._get_running_loop()
            if loop is None:
                self.drain()  # no loop in this thread: write through
                return
            self._loop, self._loop_thread = loop, threading.get_ident()
        self._scheduled = True
        loop.call_later(LINGER, self._end_of_batch)
        if not _watchdog_started:
            _start_watchdog()
        elif _parked:  # one global read per batch; a wake-up only when the watchdog found no batch open
            _wake.set()

    def _end_of_batch(self) -> None:
        self._scheduled = False
        self.drain()

    def drain(self) -> None:
        """Write every queued line now, in one system call where the descriptor takes it all."""
        lines = self._lines
        with self._write_lock:
            self.drains += 1
            count = len(lines)
            if not count:
                return
            # popleft, not a swap of the deque: a line appended by another thread meanwhile is never lost.
            data = b"\n".join([lines.popleft() for _ in range(count)]) + b"\n"
            self._emit(data)

    def _emit(self, data: bytes) -> None:
        if self._fd is None:
            assert self._stream is not None
            self._stream.write(data.decode("utf-8", "replace"))
            self._stream.flush()
            self.writes += 1
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:  # a descriptor someone made non-blocking: wait until it drains
                select.select([], [self._fd], [], 1.0)
                continue
            except InterruptedError:
                continue
            except OSError:
                return  # a closed pipe or a full disk: nowhere to report it, and the worker must go on
            self.writes += 1
            view = view[n:]

    def check_delay(self) -> bool:
        """Called by the watchdog every MAX_DELAY / 2: write lines a blocked or stopped loop still holds.

        Returns whether a batch is open: lines queued or a timer pending (the
        watchdog sleeps when none is, anywhere).
        """
        if not self._lines:
            self._seen = -1
            return self._scheduled  # (a full batch written at once leaves its timer, and more lines may follow)
        if self._seen == self.drains:  # queued for a whole tick with no drain: the loop is stuck
            self.drain()
            self._scheduled = False  # a loop that stopped with our callback pending must not block the next one
        self._seen = self.drains
        return True

    def busy(self) -> bool:
        """Whether a batch is open: lines queued, or the timer that will write them pending."""
        return self._scheduled or bool(self._lines)

    def close(self) -> None:
        """Write what is queued and stop writing: close the descriptor if it is ours (a replaced log file)."""
        self.drain()
        _OUTPUTS.discard(self)
        if self._fd is not None and self._owns_fd:
            os.close(self._fd)
        self._fd = None
        self._stream = sys.stderr  # a straggler line from an old cached logger still goes somewhere

    def after_fork(self) -> None:
        """In a forked child: the parent writes its own queued lines; forget them and its loop."""
        self._lines.clear()
        self._write_lock = threading.Lock()
        self._scheduled, self._loop, self._loop_thread = False, None, 0


def flush() -> None:
    """Write every queued log line now (the shutdown path and the atexit hook call this)."""
    for out in list(_OUTPUTS):
        out.drain()


def outputs() -> list[BatchedOutput]:
    """Every output configured in this process and not yet closed."""
    return list(_OUTPUTS)


def _watchdog() -> None:
    global _parked
    while True:
        time.sleep(MAX_DELAY / 2)
        if any([out.check_delay() for out in list(_OUTPUTS)]):
            continue
        # No batch open anywhere: sleep until a loop opens the next one (an idle worker
        # woke this thread 20 times a second). _parked is set before the outputs are looked
        # at again, and _schedule() opens its batch before it reads _parked: so either this
        # look sees the batch, or _schedule() sees _parked and wakes us.
        _wake.clear()
        _parked = True
        if not any(out.busy() for out in list(_OUTPUTS)):
            _wake.wait()
        _parked = False


_watchdog_started = False
#: The watchdog sleeps on this while no batch is open; _schedule() sets it when _parked.
_wake = threading.Event()
_parked = False


def _start_watchdog() -> None:
    """Started on the first line a loop buffers: a pool process, which has no loop, runs no extra thread."""
    global _watchdog_started
    _watchdog_started = True
    threading.Thread(target=_watchdog, name="gearworker-log-flush", daemon=True).start()


def after_fork() -> None:
    """In a forked child: forget the parent's queued lines, loops and watchdog thread."""
    global _watchdog_started, _wake, _parked
    for out in list(_OUTPUTS):
        out.after_fork()
    _watchdog_started = False  # the thread did not survive the fork
    _wake, _parked = threading.Event(), False  # nor its hold on the event's lock, if it had one
