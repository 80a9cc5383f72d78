"""The worker's writer of failed-job records: one thread, batches, the event loop never waits on the disk.

A failed job's record must be durable before its WORK_FAIL leaves (see
:class:`~gearworker.failed.record.RecordFailures`), so the job awaits it.
Records from every job that fails meanwhile are written together: the
thread takes whatever is queued (up to :data:`MAX_BATCH` records or
:data:`MAX_BATCH_BYTES` of workload), writes it with the store's
:class:`~gearworker.failed.store.BatchWriter` (one sqlite transaction on a
connection it keeps, or one folder fsync), and hands the ids back to the
loop in one call.  The loop's share per record is a future and a queue put;
a commit that takes longer simply makes the next batch bigger (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Sequence
from typing import Any

import structlog

from .store import BatchWriter, FailedJob, FailedStore

__all__ = ["MAX_BATCH", "MAX_BATCH_BYTES", "RecordWriter"]

log = structlog.get_logger("gearworker.failed")

#: Records per transaction at most; and workload bytes (a record keeps up to 1 MiB by default).
MAX_BATCH = 1000
MAX_BATCH_BYTES = 16 * 1024 * 1024

_Item = tuple[FailedJob, "asyncio.Future[str]"]
_STOP = None


class RecordWriter:
    """Writes records of one store from a thread of its own, in batches; :meth:`write` awaits one record."""

    def __init__(self, store: FailedStore) -> None:
        self.store = store
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.pending = 0  # records queued or being written
        self.batches = 0  # transactions (or folder fsyncs) so far

    def write(self, job: FailedJob) -> asyncio.Future[str]:
        """Queue ``job``; the future gets its id once it is durable, or the store's error."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._loop = loop
            self._stopped = loop.create_future()
            # A daemon: a hung disk must not keep the process from exiting (shutdown waits for the
            # records what is left of its grace period, then goes on: close()'s timeout).
            self._thread = threading.Thread(target=self._run, name="failed-job records", daemon=True)
            self._thread.start()
        future: asyncio.Future[str] = loop.create_future()
        self.pending += 1
        self._queue.put((job, future))
        return future

    async def close(self, timeout: float | None = None) -> bool:
        """Let the records queued now be written, then end the thread (it closes the store's connection).

        False when the writing took longer than ``timeout`` seconds (a hung disk, a store locked):
        the thread is left to finish, or to die with the process.
        """
        if self._thread is None or self._stopped is None:
            return True
        self._queue.put(_STOP)
        finished, _ = await asyncio.wait({self._stopped}, timeout=timeout)
        if not finished:
            return False
        self._thread = None
        return True

    # -- the thread ---------------------------------------------------------------
    def _run(self) -> None:
        writer = self.store.writer()
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch, stop = self._take(first)
                self._write(writer, batch)
                if stop:
                    return
        finally:
            writer.close()
            self._call(_set_result, self._stopped)

    def _take(self, first: _Item) -> tuple[list[_Item], bool]:
        """``first`` and whatever else is queued, up to a batch's limits; True when the stop was among them."""
        batch = [first]
        size = len(first[0].workload)
        while len(batch) < MAX_BATCH and size < MAX_BATCH_BYTES:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
            size += len(item[0].workload)
        return batch, False

    def _write(self, writer: BatchWriter, batch: Sequence[_Item]) -> None:
        try:
            result: list[str] | BaseException = writer.write([job for job, _ in batch])
        except Exception as e:  # the store's error goes to every job of the batch
            result = e
        self.batches += 1
        self._call(self._done, batch, result)

    def _call(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(callback, *args)

    # -- back on the loop ---------------------------------------------------------
    def _done(self, batch: Sequence[_Item], result: list[str] | BaseException) -> None:
        self.pending -= len(batch)
        for i, (_, future) in enumerate(batch):
            if future.done():  # its job stopped waiting (cancelled at shutdown)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result[i])


def _set_result(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
