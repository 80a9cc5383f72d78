"""gearworker.worker.runner: when a completed job's after-hooks run relative to its result on the wire.

No sockets: a real :class:`PacketStream` over a transport that records what
is written, fed the bytes of a JOB_ASSIGN_UNIQ as gearmand would send them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import structlog
import uvloop

from gearworker import config, logs
from gearworker.logs import output as logbatch
from gearworker.logs.jobline import LogMiddleware
from gearworker.middleware import JobInfo, JobResult, Middleware
from gearworker.protocol import Magic, Packet, PacketType, Parser, WorkerSession, encode, registration
from gearworker.transport import Endpoint, PacketStream, StreamOptions
from gearworker.worker import chain
from gearworker.worker.chain import Chain
from gearworker.worker.connection import GroupConnection
from gearworker.worker.dispatch import Worker
from gearworker.worker.registry import discover
from gearworker.worker.runner import ActiveJob


@pytest.fixture(autouse=True)
def _batches_wait_longer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of after-hooks wait 200 ms here, not 20: "still waiting for its batch" is then
    checked well inside the delay, even when a busy machine stalls the test for a moment."""
    monkeypatch.setattr(chain, "AFTER_DELAY", 0.2)


HANDLERS = """
from gearworker import Job, handler


@handler("echo")
async def echo(job: Job) -> bytes:
    return job.workload


@handler("fail")
async def fail(job: Job) -> None:
    raise ValueError("no")
"""


class RecordingTransport(asyncio.Transport):
    """Stands in for the socket: keeps every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def sent(self) -> list[PacketType]:
        return [p.type for p in Parser(expect=Magic.REQ).feed(b"".join(self.writes))]


class Watcher(Middleware):
    """Notes, in each after() call, which packets had been written by then."""

    def __init__(self, transport: RecordingTransport) -> None:
        self.transport = transport
        self.seen: list[tuple[str, list[PacketType]]] = []

    def after(self, job: JobInfo, result: JobResult) -> None:
        self.seen.append((result.outcome, self.transport.sent()))


def _connected(
    handlers: Path,
    transport: RecordingTransport,
    middleware: Chain | None = None,
) -> tuple[Worker, WorkerSession[ActiveJob], PacketStream]:
    """A worker with the handlers in ``handlers``, and one connection up over ``transport``."""
    settings = config.load(None, env={}, overrides={"servers": ["127.0.0.1:1"], "handlers_dir": str(handlers)})
    worker = Worker(settings, discover(handlers), None, middleware=middleware)
    group = worker.groups[0]
    options = StreamOptions(max_packet_size=1 << 20)
    session: WorkerSession[ActiveJob] = WorkerSession(b"t", registration(group.timeouts), depth=8)
    conn = GroupConnection(worker, group, Endpoint("127.0.0.1:1", options), session)
    worker.connections.append(conn)
    stream = PacketStream(conn, options)
    stream.connection_made(transport)
    conn.up(stream)
    return worker, session, stream


async def _one_job(handlers: Path, function: bytes, *, then: str = "wait") -> tuple[Watcher, RecordingTransport, int]:
    """Feed one job; return the watcher, the transport and how many after() calls the read itself made.

    ``then``: "wait" past the batch delay, or "close" the worker at once (shutdown).
    """
    transport = RecordingTransport()
    watcher = Watcher(transport)
    worker, session, stream = _connected(handlers, transport, Chain([LogMiddleware(), watcher]))
    session.grabs = 1  # as if our probe's grab were out
    stream.data_received(encode(Packet(PacketType.JOB_ASSIGN_UNIQ, (b"H:1", function, b"u", b"x"), Magic.RES)))
    during_read = len(watcher.seen)
    if then == "close":
        await worker.close()
    else:
        await asyncio.sleep(0)
        assert len(watcher.seen) == during_read  # the loop's next turn: still waiting for its batch
        await asyncio.sleep(chain.AFTER_DELAY * 3)  # the batch's timer was due first
    return watcher, transport, during_read


def _handlers(tmp_path: Path) -> Path:
    (tmp_path / "jobs.py").write_text(HANDLERS)
    return tmp_path


def test_a_completed_jobs_after_hooks_run_once_its_work_complete_is_written(tmp_path: Path) -> None:
    """The job.done line (and every after-hook) is off the lone job's latency path, and still runs."""
    watcher, _, during_read = uvloop.run(_one_job(_handlers(tmp_path), b"echo"))
    assert during_read == 0  # the read ended with the write; the hooks came after
    assert len(watcher.seen) == 1
    outcome, written = watcher.seen[0]
    assert outcome == "complete" and PacketType.WORK_COMPLETE in written


def test_hooks_still_waiting_for_their_batch_run_when_the_worker_closes(tmp_path: Path) -> None:
    """Shutdown loses no job.done line: Worker.close() runs the hooks of jobs that just completed."""
    watcher, _, during_read = uvloop.run(_one_job(_handlers(tmp_path), b"echo", then="close"))
    assert during_read == 0 and [outcome for outcome, _ in watcher.seen] == ["complete"]


def test_the_job_done_line_carries_the_time_the_job_ended_not_when_its_hook_ran(tmp_path: Path) -> None:
    """A completed job's hook may run 20 ms late, in a batch: its line's timestamp is the job's end."""
    target = tmp_path / "log.json"
    with open(target, "w") as stream:
        logs.configure("info", "json", stream=stream)
        try:
            LogMiddleware().after(
                JobInfo("echo", b"H:1", b"u", 1, "s"), JobResult("complete", 0.25, ended_at=1_700_000_000.25)
            )
            logs.flush()
        finally:
            logs.reset()
    (record,) = [json.loads(line) for line in target.read_text().splitlines()]
    assert (record["event"], record["timestamp"]) == ("job.done", "2023-11-14T22:13:20.250000Z")


def test_a_failed_jobs_after_hooks_run_before_its_failure_is_sent(tmp_path: Path) -> None:
    """Failures keep the hooks first: a failed-job record is made before gearmand hears the job ended."""
    watcher, transport, during_read = uvloop.run(_one_job(_handlers(tmp_path), b"fail"))
    assert during_read == 1
    assert [outcome for outcome, _ in watcher.seen] == ["fail"]
    assert PacketType.WORK_FAIL not in watcher.seen[0][1] and PacketType.WORK_FAIL in transport.sent()


def test_a_middleware_that_declares_it_renders_batches_is_called_directly_when_it_alone_hears_completed_jobs() -> None:
    """The default chain (the job.done line only) skips JobInfo/JobResult; anything more goes through the chain.

    The fast path is chosen by the declaration (``renders_batches = True``), not by the class: a
    middleware of the user's may take it, and a subclass of the log middleware that withdraws it does not.
    """
    log_mw = LogMiddleware()
    assert Chain([log_mw]).batch_renderer is log_mw
    assert Chain([log_mw, Watcher(RecordingTransport())]).batch_renderer is None

    class Lines(Middleware):
        renders_batches = True

        def after(self, job: JobInfo, result: JobResult) -> None: ...

        def completed(self, function: str, handle: bytes, unique: bytes, duration: float, at: float | None) -> None: ...

        def completed_many(self, lines: list[Any]) -> None: ...

    class OneByOne(LogMiddleware):
        renders_batches = False

    lines = Lines()
    assert Chain([lines]).batch_renderer is lines
    assert Chain([OneByOne()]).batch_renderer is None


def test_the_direct_job_done_line_is_the_same_line_the_chain_writes(tmp_path: Path) -> None:
    """completed() (the Runner's direct call) and after() (through the chain) write identical records."""
    target = tmp_path / "log.json"
    with open(target, "w") as stream:
        logs.configure("info", "json", stream=stream)
        try:
            log_mw = LogMiddleware()
            log_mw.after(JobInfo("echo", b"H:1", b"u\xff", 1, "s"), JobResult("complete", 0.1234567, ended_at=1e9))
            log_mw.completed("echo", b"H:1", b"u\xff", 0.1234567, 1e9)
            logs.flush()
        finally:
            logs.reset()
    first, second = [json.loads(line) for line in target.read_text().splitlines()]
    assert first == second
    assert (first["unique"], first["duration"], first["outcome"]) == ("u\ufffd", 0.123457, "complete")


BINDING_HANDLERS = """
import structlog

from gearworker import Job, handler


@handler("tagged")
async def tagged(job: Job) -> bytes:
    structlog.contextvars.bind_contextvars(photo=job.workload.decode())
    return b"ok"


@handler("plain")
async def plain(job: Job) -> bytes:
    return b"ok"
"""


def _job_done_lines(tmp_path: Path, jobs: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """Run ``jobs`` (function, workload) from one read through a worker logging JSON; return its job.done records."""
    (tmp_path / "tagging_jobs.py").write_text(BINDING_HANDLERS)  # (a module name no other test uses)
    target = tmp_path / "log.json"

    async def main() -> None:
        worker, session, stream = _connected(tmp_path, RecordingTransport())
        session.grabs = len(jobs)
        stream.data_received(
            b"".join(
                encode(Packet(PacketType.JOB_ASSIGN_UNIQ, (b"H:%d" % n, function, b"u%d" % n, data), Magic.RES))
                for n, (function, data) in enumerate(jobs)
            )
        )
        await asyncio.sleep(chain.AFTER_DELAY * 3)
        await worker.close()

    with open(target, "w") as out:
        logs.configure("info", "json", stream=out)
        try:
            uvloop.run(main())
            logs.flush()
        finally:
            logs.reset()
    records = [json.loads(line) for line in target.read_text().splitlines()]
    return [r for r in records if r["event"] == "job.done"]


def test_a_job_done_line_carries_the_contextvars_its_own_handler_bound_and_no_other_jobs(tmp_path: Path) -> None:
    """Lines wait for a batch, but each keeps its own job's bind_contextvars() values: none leak across jobs."""
    done = _job_done_lines(tmp_path, [(b"tagged", b"first"), (b"plain", b""), (b"tagged", b"second")])
    assert {r["handle"]: r.get("photo") for r in done} == {"H:0": "first", "H:1": None, "H:2": "second"}


def test_a_job_that_bound_contextvars_still_has_its_hooks_run_after_its_result_is_written(tmp_path: Path) -> None:
    """Keeping a job's own context does not put its hooks back on the client's wait (before the write)."""
    (tmp_path / "tagging_jobs.py").write_text(BINDING_HANDLERS)
    watcher, _, during_read = uvloop.run(_one_job(tmp_path, b"tagged"))
    assert during_read == 0
    ((outcome, written),) = watcher.seen
    assert outcome == "complete" and PacketType.WORK_COMPLETE in written


@pytest.mark.parametrize("unique", ["ü%d".encode(), b"u\xff%d"], ids=["utf-8", "not-utf-8"])
def test_a_batch_of_job_done_lines_is_the_same_lines_one_call_each_writes(tmp_path: Path, unique: bytes) -> None:
    """completed_many() (a batch rendered in one step) and completed() one by one write identical bytes, in order.

    A unique id that is not UTF-8 takes the one-by-one path inside completed_many(): same bytes too.
    """
    lines = [("echo", b"H:%d" % n, unique % n, 0.1234567 + n, 1e9 + n / 3) for n in range(5)]
    target = tmp_path / "log.json"
    with open(target, "w") as stream:
        logs.configure("info", "json", stream=stream)
        try:
            log_mw = LogMiddleware()
            assert logs.json_writer(log_mw._log) is not None  # the one-step path is the one tested
            log_mw.completed_many(lines)
            for line in lines:
                log_mw.completed(*line)
            logs.flush()
        finally:
            logs.reset()
    written = target.read_bytes().splitlines()
    assert written[:5] == written[5:]
    assert [json.loads(w)["handle"] for w in written[:5]] == ["H:0", "H:1", "H:2", "H:3", "H:4"]


def test_with_a_log_file_each_json_line_goes_to_the_stream_and_the_file_alike(tmp_path: Path) -> None:
    """--log-file with JSON on stderr: a batch rendered in one step and a line logged alone reach both, same bytes."""
    stream_path, file_path = tmp_path / "stderr.json", tmp_path / "worker.log"
    with open(stream_path, "w") as stream:
        logs.configure("info", "json", file=str(file_path), stream=stream)
        try:
            log_mw = LogMiddleware()
            assert logs.json_writer(log_mw._log) is not None
            log_mw.completed_many([("echo", b"H:1", b"u1", 0.5, 1e9), ("echo", b"H:2", b"u2", 0.25, 1e9 + 1)])
            structlog.get_logger("test").info("server.stopped", pid=7)
            logs.flush()
        finally:
            logs.reset()
    written = stream_path.read_bytes()
    assert written == file_path.read_bytes()
    assert [json.loads(line)["event"] for line in written.splitlines()] == ["job.done", "job.done", "server.stopped"]


def test_lines_needing_structlogs_processors_are_not_rendered_in_one_step(tmp_path: Path) -> None:
    """A logger that binds values, a console set-up, or contextvars bound here: each line takes structlog's path."""
    with open(tmp_path / "log.json", "w") as stream:
        logs.configure("info", "json", stream=stream)
        try:
            log = LogMiddleware()._log
            assert logs.json_writer(log.bind(extra=1)) is None
            structlog.contextvars.bind_contextvars(request="r1")
            try:
                assert logs.json_writer(log) is None
            finally:
                structlog.contextvars.unbind_contextvars("request")
            assert logs.json_writer(log) is not None
            logs.configure("info", "console", stream=stream)
            assert logs.json_writer(LogMiddleware()._log) is None
        finally:
            logs.reset()


def _assign(handle: bytes, function: bytes = b"echo") -> bytes:
    return encode(Packet(PacketType.JOB_ASSIGN_UNIQ, (handle, function, b"u", b"x"), Magic.RES))


async def _written_at_end(handlers: Path, data: bytes, grabs: int) -> tuple[list[list[PacketType]], RecordingTransport]:
    """Feed ``data`` in one read; return what had been written each time the worker's end-of-job bookkeeping ran."""
    transport = RecordingTransport()
    worker, session, stream = _connected(handlers, transport)
    await asyncio.sleep(0)  # the hello goes out
    transport.writes.clear()
    session.grabs = grabs  # as if our grabs were out
    seen: list[list[PacketType]] = []
    on_end = worker.runner._on_end

    def recording_on_end(job: ActiveJob) -> None:
        seen.append(transport.sent())
        on_end(job)

    worker.runner._on_end = recording_on_end
    stream.data_received(data)
    return seen, transport


@pytest.mark.parametrize("tail", [b"", encode(Packet(PacketType.NO_JOB, (), Magic.RES))], ids=["alone", "with NO_JOB"])
def test_a_lone_jobs_result_is_written_before_the_bookkeeping_that_follows_it(tmp_path: Path, tail: bytes) -> None:
    """A read that brings one job (maybe with a NO_JOB) writes WORK_COMPLETE the moment the handler returns."""
    seen, _ = uvloop.run(_written_at_end(_handlers(tmp_path), _assign(b"H:1") + tail, grabs=2 if tail else 1))
    assert seen == [[PacketType.WORK_COMPLETE]]


def test_a_read_of_several_jobs_answers_them_all_in_one_write(tmp_path: Path) -> None:
    """Batches keep one write per read: the results of a read's jobs wait for its end, together."""
    seen, transport = uvloop.run(_written_at_end(_handlers(tmp_path), _assign(b"H:1") + _assign(b"H:2"), grabs=2))
    assert seen == [[], []]
    assert len(transport.writes) == 1
    assert transport.sent().count(PacketType.WORK_COMPLETE) == 2


WAITING_HANDLER = """
import asyncio

from gearworker import Job, handler

SEEN = []


@handler("wait")
async def wait(job: Job) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        SEEN.append(job.handle)
        raise
"""


async def _dropped_in_the_same_read(handlers: Path) -> tuple[Worker, list[bytes]]:
    transport = RecordingTransport()
    worker, session, stream = _connected(handlers, transport)
    session.grabs = 1
    stream.data_received(_assign(b"H:1", b"wait"))  # the handler starts and waits
    conn = worker.connections[0]
    conn.down(None)  # the connection drops before the job's task has had a turn
    for _ in range(3):
        await asyncio.sleep(0)
    seen = worker.registry.handlers["wait"].func.__globals__["SEEN"]
    return worker, seen


def test_a_job_whose_connection_drops_in_the_read_that_brought_it_ends_and_frees_its_place(tmp_path: Path) -> None:
    """The cancellation reaches the handler where it waits, the job ends, and its place in the limits is free."""
    (tmp_path / "waiting.py").write_text(WAITING_HANDLER)
    worker, seen = uvloop.run(_dropped_in_the_same_read(tmp_path))
    assert seen == [b"H:1"]
    assert [b.used for b in worker.groups[0].buckets] == [0]
    assert not worker._orphans and worker.running == 0


_NOOP = encode(Packet(PacketType.NOOP, (), Magic.RES))
_NO_JOB = encode(Packet(PacketType.NO_JOB, (), Magic.RES))


async def _woken(handlers: Path, *, short_way: bool, full_probe: bool) -> tuple[list[bytes], tuple[object, ...]]:
    """Put a connection to sleep, wake it with a NOOP; return the writes the wake made and the state it left.

    ``short_way``: the NOOP arrives alone in a read (PacketStream's short way);
    otherwise it is handed to the connection as a parsed packet, the general path.
    ``full_probe``: the probe before the sleep brought a job (so the wake widens the window).
    """
    transport = RecordingTransport()
    worker, session, stream = _connected(handlers, transport)
    await asyncio.sleep(0)  # the hello and the first probe (a grab, PRE_SLEEP) go out
    stream.data_received(_assign(b"H:1") if full_probe else _NO_JOB)
    await asyncio.sleep(0)
    transport.writes.clear()
    if short_way:
        stream.data_received(_NOOP)
    else:
        worker.connections[0].packet_received(Packet(PacketType.NOOP, (), Magic.RES))
        await asyncio.sleep(0)  # the queued grabs go out at the end of the loop turn
    state = (
        session.window,
        session.grabs,
        session.sleeping,
        session.drained,
        session._full,
        [(b.used, b.reserved) for b in worker.groups[0].buckets],
    )
    return transport.writes, state


@pytest.mark.parametrize("full_probe", [False, True], ids=["after a quiet spell", "after a full probe"])
def test_a_noop_alone_in_its_read_is_answered_within_it_as_the_general_path_would(
    tmp_path: Path, full_probe: bool
) -> None:
    """The short way writes the same grabs, in one write before the read returns, and leaves the same state."""
    handlers = _handlers(tmp_path)
    short_writes, short_state = uvloop.run(_woken(handlers, short_way=True, full_probe=full_probe))
    general_writes, general_state = uvloop.run(_woken(handlers, short_way=False, full_probe=full_probe))
    grabs = 2 if full_probe else 1  # a probe that filled doubles the window
    expected = [PacketType.GRAB_JOB_UNIQ] * grabs + [PacketType.PRE_SLEEP]
    assert len(short_writes) == 1
    assert [p.type for p in Parser(expect=Magic.REQ).feed(short_writes[0])] == expected
    assert short_writes == general_writes
    assert short_state == general_state


def test_noop_bytes_that_end_a_packet_begun_in_an_earlier_read_are_its_payload_not_a_wake(tmp_path: Path) -> None:
    """The short way only takes a NOOP that starts and ends in its read: here the 12 bytes are a job's workload."""

    async def run() -> tuple[list[PacketType], list[Packet]]:
        transport = RecordingTransport()
        _, _, stream = _connected(_handlers(tmp_path), transport)
        await asyncio.sleep(0)
        transport.writes.clear()
        job = encode(Packet(PacketType.JOB_ASSIGN_UNIQ, (b"H:1", b"echo", b"u", _NOOP), Magic.RES))
        stream.data_received(job[: -len(_NOOP)])
        stream.data_received(job[-len(_NOOP) :])
        await asyncio.sleep(0)
        return transport.sent(), Parser(expect=Magic.REQ).feed(b"".join(transport.writes))

    sent, packets = uvloop.run(run())
    assert PacketType.WORK_COMPLETE in sent
    assert [p.args for p in packets if p.type is PacketType.WORK_COMPLETE] == [(b"H:1", _NOOP)]


@pytest.mark.parametrize("why", ["draining", "no free place"])
def test_a_noop_that_may_not_grab_is_answered_with_nothing(tmp_path: Path, why: str) -> None:
    """A draining worker, or one with every place taken, takes no job on a wake: it stays for an idle machine."""

    async def run() -> tuple[list[bytes], bool]:
        transport = RecordingTransport()
        worker, session, stream = _connected(_handlers(tmp_path), transport)
        await asyncio.sleep(0)
        stream.data_received(_NO_JOB)  # asleep
        transport.writes.clear()
        if why == "draining":
            worker.draining = True
        else:
            for bucket in worker.groups[0].buckets:
                bucket.used = bucket.limit
        stream.data_received(_NOOP)
        await asyncio.sleep(0)
        return transport.writes, session.sleeping

    writes, sleeping = uvloop.run(run())
    assert writes == []
    assert not sleeping  # awake: a place that frees up is offered to it (Worker.pump_all)


def test_the_batch_of_job_done_lines_is_written_as_it_runs_not_gathered_for_a_second_timer(tmp_path: Path) -> None:
    """The Runner's batch already waited for its lines: they leave in one write when it runs, no timer left behind."""
    target = tmp_path / "log.json"

    async def run() -> tuple[list[bytes], int, bool]:
        with open(target, "w") as out:
            logs.configure("info", "json", stream=out)
            try:
                transport = RecordingTransport()
                worker, session, stream = _connected(_handlers(tmp_path), transport)
                await asyncio.sleep(0)
                session.grabs = 2
                stream.data_received(_assign(b"H:1") + _assign(b"H:2"))
                await asyncio.sleep(0)  # both jobs completed; their lines wait for the batch
                writes = sum(o.writes for o in logbatch.outputs())
                worker.runner.completed_hooks.run()  # what the batch's timer calls
                return (
                    target.read_bytes().splitlines(),
                    sum(o.writes for o in logbatch.outputs()) - writes,
                    any(o.busy() for o in logbatch.outputs()),
                )
            finally:
                logs.reset()

    lines, writes, batch_open = uvloop.run(run())
    assert [json.loads(line)["handle"] for line in lines] == ["H:1", "H:2"]
    assert writes == 1
    assert not batch_open
