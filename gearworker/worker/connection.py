"""One group's connection to one job server: the link, the sans-IO session it carries, and the wiring between.

A :class:`GroupConnection` is its :class:`~gearworker.transport.Link`'s packet
receiver.  It hands each packet to its
:class:`~gearworker.protocol.WorkerSession` and what the session makes of it
(a job, NO_JOB, a wake-up) to the worker, through the few calls of
:class:`WorkerHooks`.  When its connection comes up it identifies and
registers again (SET_CLIENT_ID, CAN_DO): a new connection knows nothing of us.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from ..protocol import JobAssigned, NoJob, Packet, ServerError, Woken, WorkerSession
from ..transport import Endpoint, Link, PacketStream
from .capacity import Group
from .runner import ActiveJob

__all__ = ["GroupConnection", "WorkerHooks"]

log = structlog.get_logger("gearworker.worker")


class WorkerHooks(Protocol):
    """What a :class:`GroupConnection` tells its worker (:class:`gearworker.worker.dispatch.Worker`)."""

    @property
    def draining(self) -> bool:
        """Shutting down: take no more jobs."""

    def assigned(self, conn: GroupConnection, assigned: JobAssigned) -> None:
        """A grab brought a job."""

    def release(self, group: Group, grabs: int) -> None:
        """``grabs`` grabs were answered without a job, or lost."""

    def pump(self, conn: GroupConnection) -> None:
        """Send the grabs ``conn`` wants and has room for."""

    def grabs(self, conn: GroupConnection) -> bytes:
        """The grabs ``conn`` wants and has room for, reserved, to send now."""

    def orphaned(self, jobs: list[ActiveJob]) -> None:
        """These jobs' connection dropped."""

    def connection_up(self, conn: GroupConnection) -> None:
        """``conn`` is connected and registered."""

    def connection_down(self, conn: GroupConnection) -> None:
        """``conn`` lost its connection."""


class GroupConnection:
    """One group's connection to one server: a :class:`Link` and the session it carries.

    It is the link's packet receiver; what the session makes of each packet
    goes to the :class:`Worker`.
    """

    def __init__(
        self, worker: WorkerHooks, group: Group, endpoint: Endpoint, session: WorkerSession[ActiveJob]
    ) -> None:
        self.worker = worker
        self.group = group
        self.session = session
        self.stream: PacketStream | None = None
        # woken: the short way of the NOOP that wakes this connection (see PacketStream).
        self.link = Link(endpoint, self, on_up=self.up, on_down=self.down, woken=self.woken)
        self.name = endpoint.address

    # -- transport.Receiver ---------------------------------------------------
    def packet_received(self, packet: Packet) -> None:
        event = self.session.receive(packet)  # raises RemoteProtocolError: the stream drops the connection
        if event is None:
            return
        if type(event) is JobAssigned:
            self.worker.assigned(self, event)
        elif type(event) is NoJob:
            if event.sleep and self.stream is not None and not self.worker.draining:
                self.stream.send(event.sleep)
            # The answered grab held a place that another server's connection,
            # blocked by a full limit, may now use.
            self.worker.release(self.group, 1)
        elif type(event) is Woken:
            # The session's window says how many: one after a quiet spell.  A full
            # pipeline here costs gearmand a NO_JOB per extra grab before the
            # worker sees the job (measured p50 of a lone job: 165 us with 8
            # grabs, 216 us with 32).
            self.worker.pump(self)
        elif type(event) is ServerError:
            log.warning(
                "server.error",
                server=self.name,
                code=event.code.decode(errors="replace"),
                text=event.text.decode(errors="replace"),
            )

    def woken(self) -> bytes:
        """A NOOP that came alone: the grabs to write at once (the stream's short way, see PacketStream)."""
        self.session.wake()
        return self.worker.grabs(self)

    def connection_lost(self, reason: Exception | None) -> None:
        pass  # the Link reports it through down(), once it has stopped using the stream

    # -- the link comes and goes --------------------------------------------------
    def up(self, stream: PacketStream) -> None:
        if self.worker.draining:
            self.link.close()  # a connection made just as we began to drain: leave for good
            return
        self.stream = stream
        # A new connection knows nothing of us: identify and register again.
        stream.send(self.session.connected())
        self.worker.connection_up(self)

    def down(self, reason: Exception | None) -> None:
        self.stream = None
        grabs, jobs = self.session.disconnected()
        # Jobs still running from this connection were re-queued by gearmand and
        # may come back on the next connection while these copies run on; their
        # results can no longer be delivered.
        self.worker.orphaned(jobs)
        # Outstanding grabs will never be answered: free what they reserved.
        self.worker.release(self.group, grabs)
        self.worker.connection_down(self)

    def poll(self) -> None:
        """Grab once if asleep (see :meth:`WorkerSession.poll`)."""
        if self.stream is not None and not self.worker.draining and self.group.has_room:
            data = self.session.poll()
            if data:
                self.group.reserve(1)
                self.stream.send(data)
