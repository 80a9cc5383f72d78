"""Process helpers shared by the pool, the local gearmand, the pid file, ``gearworker stop`` and the command lines."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["EXIT_CLOSED_PIPE", "die_with_parent", "is_running", "keep_big_buffers", "quiet_on_closed_pipe"]

#: The exit status of a command whose output was closed (``gearworker failed list | head``): what a shell
#: reports for a tool killed by SIGPIPE, 128 + 13.
EXIT_CLOSED_PIPE = 128 + signal.SIGPIPE

_PR_SET_PDEATHSIG = 1
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Buffers up to this size come from the heap, whose freed memory is reused.
MMAP_THRESHOLD = 16 * 1024 * 1024
#: Free memory at the top of the heap is handed back to the system above this.
TRIM_THRESHOLD = 64 * 1024 * 1024


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send us ``sig`` when our parent exits (Linux only; elsewhere a no-op).

    Safe between fork and exec: it only calls prctl.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def keep_big_buffers() -> bool:
    """Have glibc's malloc reuse freed multi-megabyte buffers rather than map fresh pages for each.

    A photo job moves several buffers of its size through the worker process
    (the packet being read, its workload, the result, the packet written).
    By default glibc maps each such buffer afresh and unmaps it when freed,
    so every one of its pages faults and is zeroed again: page faults were a
    third of the worker's CPU for 2.5 MB photos (perf).  With buffers up to
    16 MiB taken from the heap, and up to 64 MiB of freed heap kept, the
    worker's CPU per photo went from 6.2-7.9 to 4.2-4.6 ms (three alternated
    runs of 24 photos through a pool of 2).  The cost: up to 64 MiB of freed
    memory may stay with the process after a burst of big jobs.

    Only the worker process calls this (it is our process, not a library
    call); setting either value turns off glibc's own adjustment of both,
    which is why both are set.  Returns False where there is no glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (exited, waiting for its parent to reap it).

    A process owned by another user counts as running (we may not signal it,
    but it is there).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def quiet_on_closed_pipe(command: Callable[[], int]) -> int:
    """Run a command line's ``command``; when its reader closes stdout, end quietly with :data:`EXIT_CLOSED_PIPE`.

    Python ignores SIGPIPE, so a closed pipe is a BrokenPipeError at the next
    write, and a traceback.  The flush here makes what ``print`` left buffered
    fail now rather than at exit; stdout then points at /dev/null, so the
    interpreter's own flush at exit cannot fail again.
    """
    try:
        code = command()
        sys.stdout.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLOSED_PIPE
    return code
