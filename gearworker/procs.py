"""Process helpers shared by the pool, the local gearmand, the pid file and ``gearworker stop``."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

__all__ = ["die_with_parent", "is_running"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send us ``sig`` when our parent exits (Linux only; elsewhere a no-op).

    Safe between fork and exec: it only calls prctl.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


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
