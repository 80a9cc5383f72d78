"""The half of the process pool that runs in each pool process (see :mod:`gearworker.worker.pool`).

Everything here is called by the parent through ``multiprocessing``, by name,
so it must stay importable on its own: :func:`init` sets the process up once,
:func:`run` runs one job, :func:`noop` answers that the process is ready.
:func:`reference` (in the parent) and :func:`resolve` (here) carry a handler
function across by module and name.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..config import Settings, activate
from ..errors import NoRetry
from ..logs import configure as configure_logs
from ..payload import to_bytes
from ..procs import die_with_parent, keep_big_buffers
from . import mailbox
from .job import CpuJob, CpuJobSpec
from .mailbox import Mailbox

__all__ = ["FuncRef", "exit_with_worker", "init", "noop", "reference", "resolve", "run"]

# Set in each child by _child_init.
_reports: Any = None
_mailbox: Mailbox | None = None


def exit_with_worker(worker: int) -> None:
    """Exit as soon as the worker process ``worker`` does.

    PR_SET_PDEATHSIG alone cannot do this: our parent is the forkserver, not
    the worker, and the forkserver only exits once every holder of its
    "alive" pipe is gone, which includes each of its children (multiprocessing
    hands them that fd).  So a SIGKILLed worker would leave the forkserver and
    every pool process running forever.  A thread waiting on a pidfd of the
    worker ends us; the forkserver and resource tracker then exit on their own.
    """
    try:
        fd = os.pidfd_open(worker)
    except ProcessLookupError:
        os._exit(1)  # the worker died before we started watching it
    except (OSError, AttributeError):  # kernel < 5.3: fall back on PDEATHSIG alone
        return

    def watch() -> None:
        select.select([fd], [], [])
        os._exit(1)

    threading.Thread(target=watch, name="exit with worker", daemon=True).start()


def init(reports: Any, box: Mailbox, settings: Settings, parent: int) -> None:
    global _reports, _mailbox
    die_with_parent()  # the forkserver (our real parent) died
    exit_with_worker(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # CPU handlers make and free big buffers too (a 12 MP resize: 4-9% less
    # CPU per photo, for ~30 MiB more resident memory per process).
    keep_big_buffers()
    _reports = reports
    _mailbox = box
    # The worker's settings, not whatever config.load() would find from here
    # (a --settings file or flags given to the worker): handlers read them with
    # config.active(), and logs go where the worker's go.
    activate(settings)
    configure_logs(settings.log_level, settings.log_format, settings.log_file)
    # Import the handler modules so that pickled function references resolve.
    from .registry import discover

    discover(settings.handlers_dir, settings.aliases)


FuncRef = Callable[[CpuJob], object] | tuple[str, str]


def reference(func: Callable[..., object]) -> FuncRef:
    """``func`` as (module, qualname), resolved in the child, where possible.

    Pickle refuses a function that is no longer the one its module holds:
    after a reload (SIGHUP) a job of the old handlers that runs again (a
    retry) must still reach its old code in the old pool's processes.
    """
    module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if module and qualname and "<" not in qualname:
        return module, qualname
    return func


def resolve(ref: FuncRef) -> Callable[[CpuJob], object]:
    if not isinstance(ref, tuple):
        return ref
    obj: Any = importlib.import_module(ref[0])
    for part in ref[1].split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def run(ref: FuncRef, spec: CpuJobSpec) -> tuple[bool, bytes | int, bool]:
    """Run one job in the child: ``(ok, result or "Type: message", retryable)``.

    A big result is left in the mailbox and only its length (an int) is
    returned.  Never raises, not even SystemExit or KeyboardInterrupt (the
    executor would carry them back into the worker's event loop, and exceptions
    may not pickle).  ``retryable`` is False for :class:`gearworker.errors.NoRetry`.
    """
    token = spec.token
    box = _mailbox
    assert box is not None

    def send(kind: str, args: tuple[bytes, ...]) -> None:
        _reports.send((token, kind, args))

    try:
        if spec.mailbox >= 0:
            spec = replace(spec, workload=box.take(spec.mailbox), mailbox=-1)
        result = to_bytes(resolve(ref)(CpuJob(spec, send)))
        if mailbox.fits(len(result)):
            with contextlib.suppress(OSError):  # no memory to grow it: the pipe still works
                return True, box.put(result), True
        return True, result, True
    except BaseException as e:  # SystemExit too: it fails the job, as in a thread or async handler
        return False, f"{type(e).__name__}: {e}".encode(), not isinstance(e, NoRetry)
    finally:
        # Reports and the result travel on different pipes; this marker tells
        # the parent that every report of this job is already in its pipe.
        _reports.send((token, "end", ()))


def noop() -> int:
    return os.getpid()
