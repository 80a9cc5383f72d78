"""A pool slot's mailbox: shared memory that carries big workloads and results past the pipe.

Through ``ProcessPoolExecutor`` alone, a 2.5 MB photo is pickled, written
through a 64 KiB pipe in about forty pieces (each a wake-up of the other
side, each fighting the worker's event loop for the GIL), read back and
unpickled; the result makes the same trip the other way.  Traced with
strace, those two pipe trips were 10 of the 25 ms a pool process sat idle
between two photos.  With a mailbox, each side makes one copy into or out
of memory both processes map, and only a length crosses the pipe.

The memory is an anonymous ``memfd``, handed to the pool process when it
starts (like the report pipe): no name in ``/dev/shm``, nothing for the
resource tracker, nothing left behind when either process is SIGKILLed: the
kernel frees it once the last process holding it is gone.

Only one side touches the mailbox at a time: the parent writes the workload
before it submits the job and reads the result after the job has ended, and
a slot runs one job at a time.  A slot whose process is killed or replaced
gets a new mailbox with its new process.  The mailbox grows to the biggest
payload it has carried (at most :data:`MAX_SIZE`) and never shrinks: its
pages count in the pool process's resident memory.
"""

from __future__ import annotations

import errno
import mmap
import os
from multiprocessing import reduction
from typing import Any

__all__ = ["MAX_SIZE", "MIN_SIZE", "Mailbox", "fits"]

#: Below this, pickling through the pipe costs less than the mailbox's
#: bookkeeping, and small jobs keep the path they had.
MIN_SIZE = 64 * 1024
#: Above this, payloads go through the pipe: a mailbox holds its pages for
#: the life of its process, and a rare huge job should not pin that much.
MAX_SIZE = 64 * 1024 * 1024
_PAGE = mmap.PAGESIZE


def fits(size: int) -> bool:
    """Whether a payload of ``size`` bytes travels through the mailbox."""
    return MIN_SIZE <= size <= MAX_SIZE


def _grown(size: int) -> int:
    # Whole pages, with room to spare, so that slowly growing payloads
    # resize the memory a few times only.
    size += size // 4
    return (size + _PAGE - 1) // _PAGE * _PAGE


class Mailbox:
    """Shared memory between the worker and one pool process.

    The worker creates it; pickling it while the pool process is being
    started (as an ``initargs`` item) hands the pool process the same
    memory.  Either side calls :meth:`put` and :meth:`take`.
    """

    __slots__ = ("_fd", "_map")

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            try:
                fd = os.memfd_create("gearworker-mailbox", os.MFD_CLOEXEC)
            except (OSError, AttributeError):  # no memfd (not Linux, an old kernel): every payload takes the pipe
                fd = -1
        self._fd = fd
        self._map: mmap.mmap | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # DupFd works only while multiprocessing starts a process: it passes
        # the descriptor along to the forkserver, as for a Connection.
        return _rebuild, (reduction.DupFd(self._fd) if self._fd >= 0 else None,)

    def put(self, data: bytes) -> int:
        """Copy ``data`` to the start of the mailbox; return its length.

        Raises :class:`OSError` when the mailbox cannot take it (no memory to
        grow it, no memfd here): the caller sends the payload through the pipe.
        """
        if self._fd < 0:
            raise OSError(errno.ENOSYS, "no mailbox")
        size = len(data)
        self._mapped(size, grow=True)[:size] = data
        return size

    def take(self, size: int) -> bytes:
        """A copy of the first ``size`` bytes of the mailbox."""
        if self._fd < 0:
            raise OSError(errno.ENOSYS, "no mailbox")
        return self._mapped(size, grow=False)[:size]

    def _mapped(self, size: int, *, grow: bool) -> mmap.mmap:
        current = self._map
        if current is not None and len(current) >= size:
            return current
        have = os.fstat(self._fd).st_size
        if have < size:
            if not grow:
                raise ValueError(f"mailbox holds {have} bytes, {size} asked for")
            have = _grown(size)
            # Allocated now, not page by page as they are written: shared pages
            # the kernel cannot find later would be a SIGBUS in mid-copy; here
            # it is an OSError, and the caller takes the pipe.
            os.posix_fallocate(self._fd, 0, have)
        if current is not None:
            current.close()
        self._map = mmap.mmap(self._fd, have)
        return self._map

    def close(self) -> None:
        """Unmap and close this side's descriptor (the other side keeps its own)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _rebuild(dup: Any) -> Mailbox:
    return Mailbox(dup.detach() if dup is not None else -1)
