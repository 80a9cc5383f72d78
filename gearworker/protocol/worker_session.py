"""The worker's side of one connection, sans-IO: packets in, typed events and bytes out.

A :class:`WorkerSession` holds the Gearman state of one worker connection
and enforces its rules; it does no I/O and knows no asyncio, so it is tested
by feeding it packets (see ``tests/test_worker_session.py``).  The caller
moves the bytes it returns and decides, from its own capacity, how many
grabs to allow.

The grab cycle::

    SET_CLIENT_ID, CAN_DO f...   identify and register, after every (re)connect
    GRAB_JOB_UNIQ x W, PRE_SLEEP a probe: W grabs (the window, 1 at first), then sleep
    <- JOB_ASSIGN_UNIQ / NO_JOB  answers to the grabs; gearmand then puts us to sleep,
                                 or answers PRE_SLEEP with NOOP when more work waits
    <- NOOP                      Woken: probe again, with the window doubled if every
                                 grab of the last probe brought a job
    GRAB_JOB_UNIQ x N            once the window reaches the pipeline depth: keep N
                                 grabs in flight, refilled as jobs come and end
    <- NO_JOB                    NoJob: grab no more; once no grab is outstanding,
    PRE_SLEEP                    sleep, and start again from a window of 1

Why probe with PRE_SLEEP behind the grabs: a worker that is woken for one job
(the common case on a quiet system) needs nothing more after it.  Grabbing
after each job until NO_JOB, then sending PRE_SLEEP, costs a write, a read and
a wake-up more per lone job, and a full pipeline of grabs costs gearmand a
NO_JOB each (measured: 10.2 system calls per lone job before, see
``bench.syscalls``).  gearmand 1.1.20 handles GRAB then PRE_SLEEP in order:
the grab clears its "NOOP sent" flag, and PRE_SLEEP either marks us asleep or,
when jobs still wait, answers NOOP at once; so no job waits unseen.  A burst
grows the window 1, 2, 4... to the full pipeline within a few round trips,
the way TCP's slow start does.

Rules enforced here, as :class:`RemoteProtocolError` (the caller drops the
connection): a job or NO_JOB that answers no outstanding grab; a packet a
worker is never sent.  As :class:`LocalProtocolError` (a bug of ours):
reporting on, or ending twice, a job this connection does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from ..errors import LocalProtocolError, RemoteProtocolError
from .codec import encode_handle_data, encode_request
from .packets import Packet, PacketType

__all__ = [
    "Event",
    "JobAssigned",
    "NoJob",
    "ServerError",
    "Woken",
    "WorkerSession",
    "registration",
]

_T = PacketType
_GRAB = encode_request(_T.GRAB_JOB_UNIQ)
_PRE_SLEEP = encode_request(_T.PRE_SLEEP)
_WORK_COMPLETE = _T.WORK_COMPLETE  # an enum member read per job: a module global is cheaper
_REPORTS = {"status": _T.WORK_STATUS, "data": _T.WORK_DATA, "warning": _T.WORK_WARNING}


class JobAssigned(NamedTuple):
    """The server handed us a job (JOB_ASSIGN, JOB_ASSIGN_UNIQ or JOB_ASSIGN_ALL).

    A named tuple, not a frozen dataclass like the other events: it is made
    once per job, on the way from the job's bytes to its handler, and builds
    in half the time (0.45 against 0.98 us, timeit).
    """

    handle: bytes
    function: bytes
    unique: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class NoJob:
    """A grab came back empty.  ``sleep`` holds PRE_SLEEP to send when this was the last grab out."""

    sleep: bytes


@dataclass(frozen=True, slots=True)
class Woken:
    """NOOP: work arrived for a sleeping worker; grab again."""


@dataclass(frozen=True, slots=True)
class ServerError:
    """The server answered with ERROR (logged; the connection stays)."""

    code: bytes
    text: bytes


Event = JobAssigned | NoJob | Woken | ServerError

#: What the caller keeps for each running job (the session only stores it).
J = TypeVar("J")

_WOKEN = Woken()
_NO_JOB_AWAKE = NoJob(b"")
_NO_JOB_SLEEP = NoJob(_PRE_SLEEP)
_IGNORED = frozenset({_T.ECHO_RES, _T.OPTION_RES})
_MISSING = object()
_new_tuple = tuple.__new__
_UNASKED = "job or NO_JOB without an outstanding GRAB_JOB"


def registration(functions: dict[bytes, int | None]) -> bytes:
    """CAN_DO (or CAN_DO_TIMEOUT, with a timeout in the server's unit) for each function."""
    out = []
    for name, timeout in functions.items():
        if timeout is None:
            out.append(encode_request(_T.CAN_DO, name))
        else:
            out.append(encode_request(_T.CAN_DO_TIMEOUT, name, str(timeout).encode()))
    return b"".join(out)


class WorkerSession(Generic[J]):
    """Gearman state of one worker connection: outstanding grabs, sleep, and the jobs it holds.

    It is also the one index of the running jobs that came on this connection:
    each handle it assigned maps to what the caller :meth:`attach` es to it.
    Only the session reads or changes that index; the caller asks
    (:meth:`holds`, :attr:`holding`, :meth:`attached`).
    ``hello`` is what identifies and registers us (SET_CLIENT_ID plus the
    CAN_DO packets); it is sent again by :meth:`connected` after every
    reconnect, because a new connection knows nothing of us.
    """

    __slots__ = ("_full", "_hello", "_jobs", "depth", "drained", "grabs", "open", "sleeping", "window")

    def __init__(self, client_id: bytes, registration: bytes, *, depth: int) -> None:
        self._hello = encode_request(_T.SET_CLIENT_ID, client_id) + registration
        #: Most GRAB_JOB requests in flight at once (one round trip per job would cap us at a C worker's speed).
        self.depth = depth
        #: Grabs of the next probe; at ``depth`` the session pipelines instead of probing.
        self.window = 1
        self.open = False
        self.grabs = 0  # outstanding GRAB_JOB_UNIQ
        self.sleeping = False  # sent PRE_SLEEP, no NOOP since
        self.drained = False  # saw NO_JOB: grab no more until NOOP or a job
        self._full = False  # every grab of the last probe brought a job (so far)
        #: The jobs this connection gave us that have not ended, by handle (None until attached).
        self._jobs: dict[bytes, J | None] = {}

    # -- the connection comes and goes ----------------------------------------
    def connected(self) -> bytes:
        """A new connection: forget the old one's state; return the hello to send."""
        self.open = True
        self.grabs = 0
        self.sleeping = self.drained = self._full = False
        self.window = 1
        self._jobs = {}
        return self._hello

    def disconnected(self) -> tuple[int, list[J]]:
        """The connection is gone: return the grabs that will never be answered and the jobs it held.

        gearmand re-queued those jobs under the same handles; they may come
        back on the next connection while these copies still run
        (at-least-once delivery), and their results can no longer be sent.
        """
        grabs, self.grabs = self.grabs, 0
        jobs = [job for job in self._jobs.values() if job is not None]
        self.open = False
        self._jobs = {}
        return grabs, jobs

    # -- grabbing ---------------------------------------------------------------
    @property
    def probing(self) -> bool:
        """Grabs go out as a probe (followed by PRE_SLEEP) until the window reaches the pipeline depth."""
        return self.window < self.depth

    def wanted(self) -> int:
        """How many more grabs this connection would send now: what the window or pipeline lacks."""
        if not self.open or self.sleeping or self.drained:
            return 0
        wanted = self.window - self.grabs
        return wanted if wanted > 0 else 0

    def grab(self, count: int) -> bytes:
        """``count`` GRAB_JOB_UNIQ requests (a probe: then PRE_SLEEP); the caller has reserved room for their jobs."""
        self.grabs += count
        if self.window < self.depth:
            self.sleeping = self._full = True
            return _GRAB * count + _PRE_SLEEP
        return _GRAB * count

    def poll(self) -> bytes:
        """One grab from a sleeping connection, though no NOOP came.

        gearmand 1.1 hands out a scheduled (epoch) job only when something
        wakes a worker (https://github.com/gearman/gearmand/issues/101), and 2.0.0 with ``--threads=0`` queues
        the wake-up but never writes it: without this, an idle system never
        runs it.  The NO_JOB that answers puts us back to sleep.
        """
        if not self.open or not self.sleeping or self.grabs:
            return b""
        self.sleeping = self.drained = False
        self.grabs = 1
        return _GRAB

    # -- packets from the server ------------------------------------------------
    def receive(self, packet: Packet) -> Event | None:
        """Apply one packet from the server; return what the caller must act on, if anything."""
        t = packet.type
        if t is _T.JOB_ASSIGN_UNIQ:  # the packet every job brings: _answered() and _assigned() inlined
            if not self.grabs:
                raise RemoteProtocolError(_UNASKED)
            self.grabs -= 1
            args = packet.args
            self.drained = False  # (see _assigned)
            self._jobs[args[0]] = None
            # JobAssigned(*args) without its Python __new__, a call fewer per job: the
            # packet's arguments are its fields, in order.  That relies on the parser,
            # which gives JOB_ASSIGN_UNIQ exactly four arguments (packets.ARGUMENTS;
            # test_worker_session pins it).
            return _new_tuple(JobAssigned, args)
        if t is _T.NO_JOB:
            self._answered()
            self.drained = True
            self._full = False
            if self.grabs:
                return _NO_JOB_AWAKE
            self.window = 1  # the queue ran dry: probe on the next wake (with a depth of 1, a plain grab)
            if self.sleeping:  # the probe's PRE_SLEEP already went out
                return _NO_JOB_AWAKE
            self.sleeping = True
            return _NO_JOB_SLEEP
        if t is _T.NOOP:
            self.wake()
            return _WOKEN
        if t is _T.ERROR:
            return ServerError(*packet.args)
        if t is _T.JOB_ASSIGN or t is _T.JOB_ASSIGN_ALL:
            self._answered()
            handle, function, *rest = packet.args
            return self._assigned(handle, function, rest[0] if t is _T.JOB_ASSIGN_ALL else b"", rest[-1])
        if t in _IGNORED:
            return None
        raise RemoteProtocolError(f"unexpected {t.name} sent to a worker")

    def wake(self) -> None:
        """NOOP: work waits for us.  The same as :meth:`receive` of a NOOP, for a caller that did not parse it."""
        if self._full and not self.grabs:
            # The last probe's grabs all brought jobs and more work waits: widen.
            self.window = min(self.depth, self.window * 2)
        self.sleeping = self.drained = self._full = False

    def _answered(self) -> None:
        if not self.grabs:
            raise RemoteProtocolError(_UNASKED)
        self.grabs -= 1

    def _assigned(self, handle: bytes, function: bytes, unique: bytes, data: bytes) -> JobAssigned:
        # A job answering a later grab means the NO_JOB seen earlier is stale:
        # grab again.  Without this, a pipeline whose last answer is a job ends
        # with no grab outstanding and no PRE_SLEEP sent, so gearmand never wakes
        # us (measured: the echo bench stalled with 336 jobs queued, 0 running).
        self.drained = False
        self._jobs[handle] = None
        return JobAssigned(handle, function, unique, data)

    # -- reporting on a job -------------------------------------------------------
    def attach(self, handle: bytes, job: J) -> None:
        """Keep ``job`` as the running copy of ``handle`` (after :class:`JobAssigned`)."""
        if handle not in self._jobs:
            raise LocalProtocolError(f"job {handle!r} was not assigned on this connection")
        self._jobs[handle] = job

    def holds(self, handle: bytes, job: J) -> bool:
        """``job`` is the running copy of ``handle`` on this connection (not an older, re-queued one)."""
        return self._jobs.get(handle) is job

    @property
    def holding(self) -> int:
        """How many jobs this connection holds: assigned and not ended (attached or not)."""
        return len(self._jobs)

    def attached(self) -> list[J]:
        """The jobs attached to this connection's handles, oldest first."""
        return [job for job in self._jobs.values() if job is not None]

    def report(self, handle: bytes, kind: str, *args: bytes) -> bytes:
        """WORK_STATUS / WORK_DATA / WORK_WARNING (``kind`` "status", "data", "warning")."""
        if handle not in self._jobs:
            raise LocalProtocolError(f"report on job {handle!r}, which this connection does not hold")
        return encode_request(_REPORTS[kind], handle, *args)

    def complete(self, handle: bytes, result: bytes) -> bytes:
        """WORK_COMPLETE: the job ends."""
        if self._jobs.pop(handle, _MISSING) is _MISSING:  # _end() inlined: once per job
            raise LocalProtocolError(f"job {handle!r} is not held by this connection (ended twice?)")
        return encode_handle_data(_WORK_COMPLETE, handle, result)  # the handle is one the server sent

    def fail(self, handle: bytes, message: bytes, *, exception: bool = False) -> bytes:
        """End the job as failed, carrying ``message``.

        With ``exception``, WORK_EXCEPTION.  Otherwise WORK_WARNING with the
        message, then WORK_FAIL: gearmand 1.1.20 turns WORK_EXCEPTION into a
        malformed WORK_FAIL for clients that did not ask for exceptions (Perl's
        client dies, the gearman CLI hangs), while this pair is understood by
        every client.
        """
        self._end(handle)
        if exception:
            return encode_request(_T.WORK_EXCEPTION, handle, message)
        return encode_request(_T.WORK_WARNING, handle, message) + encode_request(_T.WORK_FAIL, handle)

    def forget(self, handle: bytes) -> None:
        """Stop holding a job without ending it on the wire: it is handed back.

        gearmand re-queues it when this connection closes (a draining worker
        closes a connection once it holds nothing).
        """
        self._end(handle)

    def _end(self, handle: bytes) -> None:
        # Exactly one of WORK_COMPLETE / WORK_FAIL / WORK_EXCEPTION ends a job.
        try:
            del self._jobs[handle]
        except KeyError:
            raise LocalProtocolError(f"job {handle!r} is not held by this connection (ended twice?)") from None
