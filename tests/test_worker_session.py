"""The sans-IO worker session: the grab/sleep/wake rules and the jobs a connection holds, without sockets.

Server bytes are fed through a real :class:`Parser` (whole, byte by byte, and
with trailing data) and what the session returns is decoded again, so these
tests pin the exact packets on the wire.
"""

from __future__ import annotations

import pytest

from gearworker.errors import LocalProtocolError, RemoteProtocolError
from gearworker.protocol import (
    JobAssigned,
    Magic,
    NoJob,
    Packet,
    PacketType,
    Parser,
    ServerError,
    Woken,
    WorkerSession,
    encode,
    registration,
    response,
)

T = PacketType


def sent(data: bytes) -> list[tuple[PacketType, tuple[bytes, ...]]]:
    """What the session asked us to send, as (type, args)."""
    return [(p.type, p.args) for p in Parser(expect=Magic.REQ).feed(data)]


def session(depth: int = 3) -> WorkerSession[str]:
    s: WorkerSession[str] = WorkerSession(b"host-1", registration({b"echo": None, b"slow": 65000}), depth=depth)
    return s


def feed(s: WorkerSession[str], data: bytes, *, chunk: int = 0) -> list[object]:
    """Parse server bytes (in chunks of ``chunk`` bytes; 0: whole) and apply each packet."""
    parser = Parser(expect=Magic.RES)
    pieces = [data] if not chunk else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    events: list[object] = []
    for piece in pieces:
        for packet in parser.feed(piece):
            events.append(s.receive(packet))
    return events


ASSIGN = encode(response(T.JOB_ASSIGN_UNIQ, b"H:1", b"echo", b"u-1", b"data\x00with nul"))
NO_JOB = encode(response(T.NO_JOB))
NOOP = encode(response(T.NOOP))


def test_connected_identifies_then_registers_each_function_with_its_timeout() -> None:
    """SET_CLIENT_ID first, then CAN_DO (no timeout) and CAN_DO_TIMEOUT (milliseconds) per function."""
    s = session()
    assert sent(s.connected()) == [
        (T.SET_CLIENT_ID, (b"host-1",)),
        (T.CAN_DO, (b"echo",)),
        (T.CAN_DO_TIMEOUT, (b"slow", b"65000")),
    ]


def assign(n: int) -> bytes:
    return encode(response(T.JOB_ASSIGN_UNIQ, f"H:{n}".encode(), b"echo", b"", b""))


def pipelining(depth: int = 3) -> WorkerSession[str]:
    """A connected session whose probes brought only jobs until its window reached ``depth``."""
    s = session(depth)
    s.connected()
    n = 0
    while s.probing:
        count = s.wanted()
        s.grab(count)
        feed(s, b"".join(assign(n + i) for i in range(count)) + NOOP)
        for i in range(count):
            s.complete(f"H:{n + i}".encode(), b"")
        n += count
    return s


def test_every_reconnect_sends_the_hello_again_and_forgets_the_old_connection() -> None:
    """A new connection knows nothing of us: re-register; grabs, jobs and the window of the old one are gone."""
    s = pipelining()
    first = s.connected()
    s.grab(2)
    feed(s, ASSIGN)
    s.attach(b"H:1", "job")
    grabs, jobs = s.disconnected()
    assert (grabs, jobs) == (1, ["job"])
    assert s.wanted() == 0  # closed: nothing to grab on
    assert s.connected() == first
    assert (s.grabs, s.holding, s.wanted(), s.probing) == (0, 0, 1, True)


def test_the_first_grab_is_a_probe_one_grab_then_pre_sleep() -> None:
    """After connecting, one GRAB_JOB_UNIQ with PRE_SLEEP right behind it, in one write; then nothing until NOOP."""
    s = session()
    s.connected()
    assert s.wanted() == 1
    assert sent(s.grab(1)) == [(T.GRAB_JOB_UNIQ, ()), (T.PRE_SLEEP, ())]
    assert s.sleeping and s.wanted() == 0


def test_a_lone_job_needs_nothing_sent_after_its_result() -> None:
    """Woken for one job: the probe's PRE_SLEEP already went out, so the job's result is the only packet."""
    s = session()
    s.connected()
    s.grab(1)
    (event,) = feed(s, ASSIGN)
    assert isinstance(event, JobAssigned)
    assert s.wanted() == 0 and s.sleeping  # no refill grab, no second PRE_SLEEP
    assert sent(s.complete(b"H:1", b"ok")) == [(T.WORK_COMPLETE, (b"H:1", b"ok"))]


@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_a_probe_answered_by_no_job_leaves_the_session_asleep_with_nothing_to_send(chunk: int) -> None:
    """NO_JOB to a probe: NoJob with no PRE_SLEEP to send (it went with the grab), whole or byte by byte."""
    s = session()
    s.connected()
    s.grab(1)
    assert feed(s, NO_JOB, chunk=chunk) == [NoJob(b"")]
    assert s.sleeping and s.wanted() == 0 and s.grabs == 0


@pytest.mark.parametrize("chunk", [0, 1, 5])
def test_the_window_doubles_while_probes_bring_only_jobs_then_the_pipeline_takes_over(chunk: int) -> None:
    """A burst: probes of 1, 2, 4 grabs (each with PRE_SLEEP) answered by jobs and NOOP, then plain grabs to depth."""
    s = session(depth=8)
    s.connected()
    windows = []
    n = 0
    while s.probing:
        count = s.wanted()
        windows.append(count)
        assert sent(s.grab(count)) == [(T.GRAB_JOB_UNIQ, ())] * count + [(T.PRE_SLEEP, ())]
        events = feed(s, b"".join(assign(n + i) for i in range(count)) + NOOP, chunk=chunk)
        assert [type(e) for e in events] == [JobAssigned] * count + [Woken]
        n += count
    assert windows == [1, 2, 4]
    assert s.wanted() == 8
    assert sent(s.grab(8)) == [(T.GRAB_JOB_UNIQ, ())] * 8  # pipelining: no PRE_SLEEP behind the grabs


def test_lone_jobs_keep_the_window_small() -> None:
    """A NO_JOB in a probe puts the window back to one grab; a probe that brought only jobs widens it once."""
    s = session(depth=8)
    s.connected()
    s.grab(1)
    feed(s, ASSIGN + NOOP)  # the job, then (later) a new one arrives
    assert s.wanted() == 2
    s.grab(2)
    feed(s, assign(2) + NO_JOB)  # only one job waited
    feed(s, NOOP)
    assert s.wanted() == 1


def test_a_noop_with_grabs_still_out_does_not_widen_the_window() -> None:
    """Only a probe fully answered by jobs counts: a NOOP overtaking our grabs says nothing of the queue."""
    s = session(depth=8)
    s.connected()
    s.grab(1)
    feed(s, NOOP)
    assert s.window == 1 and s.grabs == 1 and s.wanted() == 0


def test_grabs_fill_the_pipeline_up_to_its_depth() -> None:
    """Pipelining: wanted() is what the pipeline lacks; grab(n) sends exactly n GRAB_JOB_UNIQ."""
    s = pipelining(depth=3)
    assert s.wanted() == 3
    assert sent(s.grab(2)) == [(T.GRAB_JOB_UNIQ, ())] * 2
    assert s.wanted() == 1


@pytest.mark.parametrize("chunk", [0, 1, 5])
def test_a_job_is_assigned_whole_byte_by_byte_or_in_chunks(chunk: int) -> None:
    """JOB_ASSIGN_UNIQ becomes one JobAssigned, however the bytes arrive; NUL in the data survives."""
    s = session()
    s.connected()
    s.grab(1)
    assert feed(s, ASSIGN, chunk=chunk) == [JobAssigned(b"H:1", b"echo", b"u-1", b"data\x00with nul")]
    assert s.grabs == 0 and s.holding == 1 and s.attached() == []  # held, not yet attached


def test_packets_after_a_job_in_the_same_read_are_applied_in_order() -> None:
    """Trailing data: a job then NO_JOB in one read give two events, and the last grab answered sends PRE_SLEEP."""
    s = pipelining()
    s.grab(2)
    events = feed(s, ASSIGN + NO_JOB)
    assert isinstance(events[0], JobAssigned)
    assert isinstance(events[1], NoJob) and sent(events[1].sleep) == [(T.PRE_SLEEP, ())]
    assert s.sleeping and s.probing  # the queue ran dry: the next wake probes again


def test_no_job_with_grabs_still_out_does_not_sleep_yet() -> None:
    """PRE_SLEEP only once no grab is outstanding: a later grab may still bring a job."""
    s = pipelining()
    s.grab(3)
    (first,) = feed(s, NO_JOB)
    assert first == NoJob(b"") and not s.sleeping and s.wanted() == 0
    feed(s, NO_JOB)
    (last,) = feed(s, NO_JOB)
    assert isinstance(last, NoJob) and last.sleep and s.sleeping


def test_a_job_answering_a_later_grab_makes_an_earlier_no_job_stale() -> None:
    """After NO_JOB then a job, the session wants to grab again (else it would never sleep nor wake)."""
    s = pipelining()
    s.grab(2)
    feed(s, NO_JOB)
    assert s.wanted() == 0
    feed(s, ASSIGN)
    assert s.wanted() == 3


def test_noop_wakes_a_sleeping_session() -> None:
    """NOOP after PRE_SLEEP: Woken, and the session wants a probe again."""
    s = session()
    s.connected()
    s.grab(1)
    feed(s, NO_JOB)
    assert s.sleeping and s.wanted() == 0
    assert feed(s, NOOP) == [Woken()]
    assert not s.sleeping and s.wanted() == 1


def test_a_pipeline_of_one_never_probes() -> None:
    """grab_pipeline = 1: one grab at a time, PRE_SLEEP only after NO_JOB (the classic cycle)."""
    s = session(depth=1)
    s.connected()
    assert not s.probing
    assert sent(s.grab(1)) == [(T.GRAB_JOB_UNIQ, ())]
    (event,) = feed(s, NO_JOB)
    assert isinstance(event, NoJob) and sent(event.sleep) == [(T.PRE_SLEEP, ())]


def test_idle_poll_grabs_once_from_a_sleeping_session_only() -> None:
    """poll(): one GRAB from a sleeping connection (gearmand #101); nothing when awake or already grabbing."""
    s = session()
    s.connected()
    assert s.poll() == b""  # awake
    s.grab(1)
    assert s.poll() == b""  # the probe's grab is still out
    feed(s, NO_JOB)
    assert sent(s.poll()) == [(T.GRAB_JOB_UNIQ, ())]
    assert s.poll() == b"" and s.grabs == 1
    (event,) = feed(s, NO_JOB)
    assert isinstance(event, NoJob) and event.sleep and s.sleeping  # and back to sleep


@pytest.mark.parametrize("packet", [ASSIGN, NO_JOB])
def test_a_job_or_no_job_without_an_outstanding_grab_is_a_remote_protocol_error(packet: bytes) -> None:
    """The server answered a grab we never sent: the connection must be dropped."""
    s = session()
    s.connected()
    with pytest.raises(RemoteProtocolError, match="without an outstanding GRAB_JOB"):
        feed(s, packet)


@pytest.mark.parametrize("ptype", [T.JOB_CREATED, T.STATUS_RES, T.WORK_COMPLETE])
def test_a_packet_a_worker_is_never_sent_is_a_remote_protocol_error(ptype: PacketType) -> None:
    """Client-side replies on a worker connection mean a confused peer."""
    s = session()
    s.connected()
    args = tuple(b"x" for _ in range({T.JOB_CREATED: 1, T.STATUS_RES: 5, T.WORK_COMPLETE: 2}[ptype]))
    with pytest.raises(RemoteProtocolError, match=f"unexpected {ptype.name}"):
        s.receive(Packet(ptype, args, Magic.RES))


def test_error_echo_and_option_replies_do_not_disturb_the_grab_cycle() -> None:
    """ERROR becomes a ServerError event; ECHO_RES and OPTION_RES are ignored."""
    s = session()
    s.connected()
    s.grab(1)
    events = feed(
        s,
        encode(response(T.ERROR, b"E1", b"oops"))
        + encode(response(T.ECHO_RES, b"x"))
        + encode(response(T.OPTION_RES, b"exceptions")),
    )
    assert events == [ServerError(b"E1", b"oops"), None, None]
    assert s.grabs == 1


def test_old_assign_packets_are_understood_too() -> None:
    """JOB_ASSIGN (no unique) and JOB_ASSIGN_ALL (with a reducer) become JobAssigned."""
    s = session()
    s.connected()
    s.grab(2)
    events = feed(
        s,
        encode(response(T.JOB_ASSIGN, b"H:2", b"echo", b"d"))
        + encode(response(T.JOB_ASSIGN_ALL, b"H:3", b"echo", b"u", b"reducer", b"e")),
    )
    assert events == [JobAssigned(b"H:2", b"echo", b"", b"d"), JobAssigned(b"H:3", b"echo", b"u", b"e")]


def test_exactly_one_ending_per_job_and_reports_only_while_it_runs() -> None:
    """complete() ends a job; a second ending or a report afterwards is a LocalProtocolError."""
    s = session()
    s.connected()
    s.grab(1)
    feed(s, ASSIGN)
    s.attach(b"H:1", "job")
    assert s.holds(b"H:1", "job") and not s.holds(b"H:1", "other copy")
    assert sent(s.report(b"H:1", "status", b"1", b"2")) == [(T.WORK_STATUS, (b"H:1", b"1", b"2"))]
    assert sent(s.complete(b"H:1", b"result")) == [(T.WORK_COMPLETE, (b"H:1", b"result"))]
    with pytest.raises(LocalProtocolError, match="ended twice"):
        s.fail(b"H:1", b"late")
    with pytest.raises(LocalProtocolError, match="does not hold"):
        s.report(b"H:1", "data", b"late")


def test_failure_is_a_warning_then_work_fail_or_a_work_exception() -> None:
    """fail(): WORK_WARNING(message) + WORK_FAIL, which every client understands; or WORK_EXCEPTION if asked."""
    s = session()
    s.connected()
    s.grab(2)
    feed(s, ASSIGN + encode(response(T.JOB_ASSIGN_UNIQ, b"H:9", b"echo", b"", b"")))
    assert sent(s.fail(b"H:1", b"ValueError: no")) == [
        (T.WORK_WARNING, (b"H:1", b"ValueError: no")),
        (T.WORK_FAIL, (b"H:1",)),
    ]
    assert sent(s.fail(b"H:9", b"boom", exception=True)) == [(T.WORK_EXCEPTION, (b"H:9", b"boom"))]


def test_forget_hands_a_job_back_without_a_packet() -> None:
    """A cancelled job is forgotten: no ending is sent, gearmand re-queues it when the connection closes."""
    s = session()
    s.connected()
    s.grab(1)
    feed(s, ASSIGN)
    s.forget(b"H:1")
    assert s.holding == 0


def test_attach_refuses_a_handle_this_connection_never_assigned() -> None:
    """Attaching a job to a handle the server did not give us is our bug, caught at once."""
    s = session()
    s.connected()
    with pytest.raises(LocalProtocolError, match="not assigned"):
        s.attach(b"H:404", "job")


def test_the_protocol_package_imports_no_asyncio() -> None:
    """gearworker.protocol stays sans-IO: importing it (alone, in a fresh interpreter) loads no asyncio."""
    import subprocess
    import sys

    code = "import sys, gearworker.protocol; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_session_builds_jobassigned_from_job_assign_uniqs_arguments_in_the_parsers_order() -> None:
    """The per-job fast path makes JobAssigned straight from the packet's arguments: both layouts must agree."""
    from gearworker.protocol import ARGUMENTS, PacketType

    assert ARGUMENTS[PacketType.JOB_ASSIGN_UNIQ] == JobAssigned._fields


def test_only_the_session_reads_its_job_index_and_answers_what_it_holds() -> None:
    """holds / holding / attached report the index; attach checks the handle was assigned here."""
    s = session()
    s.connected()
    s.grab(2)
    feed(s, ASSIGN)
    s.attach(b"H:1", "job")
    assert s.holds(b"H:1", "job") and not s.holds(b"H:1", "other") and not s.holds(b"H:9", "job")
    assert (s.holding, s.attached()) == (1, ["job"])
    with pytest.raises(LocalProtocolError):
        s.attach(b"H:9", "job")
