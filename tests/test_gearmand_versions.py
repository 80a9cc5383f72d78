"""How the gearmand in use behaves where gearmand 1.1 and 2.0 differ, or where gearworker relies on it.

Each test runs against real gearmand processes of the version the run asked for (``--gearmand``); CI runs
them against Debian's 1.1.20 and against 2.0.0.  A test whose expectation differs by version says why
(``gearmand_versions``) and asserts each version's behaviour; the rest expect the same of both.
docs/gearmand.md's table cites these tests.  Raw sockets (tests/fakepeer.py's PacketSocket), so every
packet gearmand sends is seen; gearworker processes where its own behaviour is the point.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakepeer import PacketSocket, RawClient
from gearmand import Gearmand, Version, binary
from support import MakeGearmand, handlers_dir, start_worker, wait_until

from gearworker.protocol import AdminParser, Magic, Packet, PacketType, request

T = PacketType


class RawWorker:
    """A worker on one connection to gearmand, speaking the protocol packet by packet."""

    def __init__(self, g: Gearmand, *functions: str, timeout_ms: int | None = None) -> None:
        self.conn = PacketSocket(socket.create_connection(("127.0.0.1", g.port), timeout=10), Magic.RES)
        for name in functions:
            if timeout_ms is None:
                self.send(request(T.CAN_DO, name.encode()))
            else:
                self.send(request(T.CAN_DO_TIMEOUT, name.encode(), str(timeout_ms).encode()))

    def send(self, *packets: Packet) -> None:
        self.conn.send(*packets)

    def grab(self) -> Packet | None:
        """GRAB_JOB_UNIQ: the JOB_ASSIGN_UNIQ, or None for NO_JOB (a NOOP before the answer is passed over)."""
        self.send(request(T.GRAB_JOB_UNIQ))
        while True:
            packet = self.conn.recv(10)
            if packet.type is T.JOB_ASSIGN_UNIQ:
                return packet
            if packet.type is T.NO_JOB:
                return None
            assert packet.type is T.NOOP, packet

    def drain(self) -> list[str]:
        """Grab one job at a time and complete it, until NO_JOB; the unique ids in the order received."""
        got = []
        while (job := self.grab()) is not None:
            handle, _function, unique, _data = job.args
            got.append(unique.decode())
            self.send(request(T.WORK_COMPLETE, handle, b""))
        return got

    def sleep(self) -> None:
        self.send(request(T.PRE_SLEEP))

    def woken(self, timeout: float) -> bool:
        """Did a NOOP arrive within ``timeout`` seconds?"""
        try:
            return self.conn.recv(timeout).type is T.NOOP
        except TimeoutError:
            return False

    def alive(self) -> bool:
        self.send(request(T.ECHO_REQ, b"ping"))
        return self.conn.wait_for(T.ECHO_RES, 5).args == (b"ping",)

    def close(self) -> None:
        self.conn.sock.close()


SUBMIT_BG = {"low": T.SUBMIT_JOB_LOW_BG, "normal": T.SUBMIT_JOB_BG, "high": T.SUBMIT_JOB_HIGH_BG}


def queue(g: Gearmand, *jobs: tuple[str, str, str]) -> None:
    """Queue background jobs (function, unique, priority) in this order, with no worker connected."""
    client = RawClient(g.port)
    try:
        for function, unique, priority in jobs:
            client.submit(function, b"", unique.encode(), ptype=SUBMIT_BG[priority])
    finally:
        client.close()


@pytest.fixture
def raw_workers() -> Iterator[list[RawWorker]]:
    """Raw workers a test opens (append them); closed afterwards."""
    opened: list[RawWorker] = []
    yield opened
    for w in opened:
        w.close()


# -- which gearmand, and its version ---------------------------------------------------------------


def test_the_gearmand_on_path_is_the_one_the_tests_start() -> None:
    """gearworker's own local gearmand (looked up on PATH) runs the gearmand the run asked for, like the fixtures."""
    on_path = shutil.which("gearmand")
    assert on_path is not None
    assert os.path.realpath(on_path) == os.path.realpath(binary().path)


def test_admin_version_answer_is_what_gearmand_version_prints(gearmand: Gearmand) -> None:
    """The admin ``version`` answer and ``gearmand --version`` carry the same text: "1.1.20+ds" from Debian's,
    "2.0.0" from scripts/gearmand's build; the report header prints it."""
    assert gearmand.version() == Version(gearmand.binary.version.reported, gearmand.binary.version.asked)


def test_an_empty_version_answer_is_an_empty_line_and_an_unknown_version() -> None:
    """gearmand 2.0.0 built as its tag's archive comes answers ``OK `` (its version comes from git describe):
    the client's admin parser returns one empty line, not an error, and an empty version is unknown (no
    guess: code that needs the version says so), unless the run asked for a version."""
    parser = AdminParser()
    parser.sent("version")
    parser.sent("version")
    empty, named = parser.feed(b"OK \nOK 2.0.0\n")
    assert empty.ok and empty.lines == ("",)
    assert named.ok and named.lines == ("2.0.0",)
    assert Version("").release is None
    with pytest.raises(Exception, match="reports no version"):
        Version("").at_least(2)
    assert Version("", asked="2.0.0").at_least(2)
    assert Version("1.1.20+ds").release == (1, 1, 20) and not Version("1.1.20+ds").at_least(2)


# -- dispatch order --------------------------------------------------------------------------------

DISPATCH = "gearmand 2.0.0 applies priority across all of a connection's functions, then round-robin (gearmand #431)"


@pytest.mark.gearmand_versions(DISPATCH)
def test_one_connection_gets_a_high_job_first_on_2_0_and_the_last_registered_function_first_on_1_1(
    gearmand: Gearmand, gearmand_version: Version, raw_workers: list[RawWorker]
) -> None:
    """Queued: 2 low jobs of A, 2 high of B, 2 normal of A; a worker registers B, then A, and grabs one at a time.

    1.1 serves one function at a time, the last registered first, priority only within it: A's normal and low
    jobs go before B's high ones.  2.0 applies priority across functions: B's high jobs first."""
    queue(gearmand, ("A", "A-low-1", "low"), ("A", "A-low-2", "low"), ("B", "B-high-1", "high"))
    queue(gearmand, ("B", "B-high-2", "high"), ("A", "A-normal-1", "normal"), ("A", "A-normal-2", "normal"))
    worker = RawWorker(gearmand, "B", "A")
    raw_workers.append(worker)
    got = worker.drain()
    if gearmand_version.at_least(2):
        assert got == ["B-high-1", "B-high-2", "A-normal-1", "A-normal-2", "A-low-1", "A-low-2"]
    else:
        assert got == ["A-normal-1", "A-normal-2", "A-low-1", "A-low-2", "B-high-1", "B-high-2"]


@pytest.mark.gearmand_versions(DISPATCH)
def test_same_priority_jobs_of_two_functions_alternate_on_2_0_and_come_function_by_function_on_1_1(
    gearmand: Gearmand, gearmand_version: Version, raw_workers: list[RawWorker]
) -> None:
    """Queued: A1-A3 then B1-B3, all normal; a worker registers A, then B.  1.1 empties B (registered last) before
    A; 2.0 alternates between the functions."""
    queue(gearmand, *((f, f"{f}{i}", "normal") for f in "AB" for i in (1, 2, 3)))
    worker = RawWorker(gearmand, "A", "B")
    raw_workers.append(worker)
    got = worker.drain()
    if gearmand_version.at_least(2):
        assert got == ["B1", "A1", "B2", "A2", "B3", "A3"]
    else:
        assert got == ["B1", "B2", "B3", "A1", "A2", "A3"]


def test_jobs_of_one_function_come_by_priority_then_in_submission_order(
    gearmand: Gearmand, raw_workers: list[RawWorker]
) -> None:
    """Within one function both versions hand out high, then normal, then low, each first in, first out."""
    queue(gearmand, *(("A", f"{p}-{i}", p) for i in (1, 2, 3) for p in ("low", "normal", "high")))
    worker = RawWorker(gearmand, "A")
    raw_workers.append(worker)
    assert worker.drain() == [f"{p}-{i}" for p in ("high", "normal", "low") for i in (1, 2, 3)]


@pytest.mark.parametrize("wakeup", [None, 1], ids=["default", "worker-wakeup-1"])
def test_a_new_job_wakes_every_sleeping_worker_unless_worker_wakeup_limits_it(
    gearmand_factory: MakeGearmand, raw_workers: list[RawWorker], wakeup: int | None
) -> None:
    """Two workers asleep (PRE_SLEEP); one job submitted.  By default gearmand sends NOOP to both (the first grab
    wins: 2.0's "round-robin" is between a connection's functions, not between workers); with
    ``--worker-wakeup=1`` to one.  The same on 1.1 and 2.0."""
    g = gearmand_factory(extra=[] if wakeup is None else [f"--worker-wakeup={wakeup}"])
    workers = [RawWorker(g, "f"), RawWorker(g, "f")]
    raw_workers += workers
    for w in workers:
        w.sleep()
    wait_until(lambda: g.status().get("f") == (0, 0, 2), 5, what="both workers registered")
    time.sleep(0.2)  # both PRE_SLEEPs handled
    queue(g, ("f", "j1", "normal"))
    woken = [w.woken(1.0) for w in workers]
    assert sum(woken) == (2 if wakeup is None else 1), woken


# -- CAN_DO_TIMEOUT --------------------------------------------------------------------------------


def _jobs(g: Gearmand, function: str = "f") -> tuple[int, int]:
    """(waiting, running) jobs of ``function``: gearmand's ``status`` counts running jobs among the queued."""
    total, running, _workers = g.status().get(function, (0, 0, 0))
    return total - running, running


def test_can_do_timeout_is_milliseconds_and_requeues_a_held_job_silently(
    gearmand: Gearmand, raw_workers: list[RawWorker]
) -> None:
    """``CAN_DO_TIMEOUT f 1000``, a job grabbed and never answered: about 1 s later gearmand puts it back in the
    queue (1000 is milliseconds); it does not fail it, tells neither client nor worker, and keeps the worker
    connected.  The same on 1.1 and 2.0."""
    worker = RawWorker(gearmand, "f", timeout_ms=1000)
    raw_workers.append(worker)
    client = RawClient(gearmand.port)
    try:
        handle = client.submit("f", b"x", b"j1")
        assert worker.grab() is not None
        assert _jobs(gearmand) == (0, 1)
        wait_until(lambda: _jobs(gearmand) == (1, 0), 10, what="the held job back in the queue")
        assert worker.alive()
        with pytest.raises(TimeoutError):
            client.conn.recv(0.5)  # no WORK_FAIL, nothing
        again = worker.grab()  # the same job, handed out again
        assert again is not None and again.args[0] == handle
    finally:
        client.close()


def test_pre_sleep_cancels_can_do_timeout_so_a_worker_that_sleeps_keeps_its_job(
    gearmand: Gearmand, raw_workers: list[RawWorker]
) -> None:
    """A job grabbed under ``CAN_DO_TIMEOUT f 1000``, then PRE_SLEEP (as gearworker sends right behind its grabs):
    gearmand removes the connection's timer, and the job stays running 3 s later.  The same on 1.1 and 2.0."""
    worker = RawWorker(gearmand, "f", timeout_ms=1000)
    raw_workers.append(worker)
    queue(gearmand, ("f", "j1", "normal"))
    assert worker.grab() is not None
    worker.sleep()
    time.sleep(3.0)
    assert _jobs(gearmand) == (0, 1)


@pytest.mark.gearmand_versions("1.1's timer keeps the first job it was armed for; 2.0 re-arms it for the newest")
def test_can_do_timeout_covers_one_job_per_connection_the_first_on_1_1_the_newest_on_2_0(
    gearmand: Gearmand, gearmand_version: Version, raw_workers: list[RawWorker]
) -> None:
    """Two jobs grabbed 0.5 s apart under ``CAN_DO_TIMEOUT f 1000``, neither answered: one timer per connection,
    so only one job goes back to the queue; the other stays running.  1.1 re-queues the first, 2.0 the second."""
    worker = RawWorker(gearmand, "f", timeout_ms=1000)
    raw_workers.append(worker)
    queue(gearmand, ("f", "j1", "normal"), ("f", "j2", "normal"))
    assert worker.grab() is not None
    time.sleep(0.5)
    assert worker.grab() is not None
    wait_until(lambda: _jobs(gearmand) == (1, 1), 10, what="one of the two jobs back in the queue")
    time.sleep(2.0)  # three timeouts' worth: the other one stays
    assert _jobs(gearmand) == (1, 1)
    other = RawWorker(gearmand, "f")
    raw_workers.append(other)
    requeued = other.grab()
    assert requeued is not None
    assert requeued.args[2] == (b"j2" if gearmand_version.at_least(2) else b"j1")


HANDLERS = """
import asyncio
import time
from gearworker import handler


@handler("hang", timeout=1)
async def hang(job):
    time.sleep(60)  # blocks the event loop: the whole worker hangs, its own timeout cannot fire


@handler("short", timeout=1)
async def short(job):
    await asyncio.sleep(0.3)
    return b""
"""


def test_a_hung_gearworker_keeps_its_lone_job_because_its_pre_sleep_cancelled_the_can_do_timeout(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """A gearworker worker takes a lone job (CAN_DO_TIMEOUT 2000: timeout 1 s + timeout_margin 1 s) and hangs:
    its wake-up grab went out with PRE_SLEEP behind it, which removed gearmand's timer, so the job is not handed
    to anyone else 4 s later.  The same on 1.1 and 2.0."""
    worker = start_worker(
        [gearmand.address],
        handlers=handlers_dir(tmp_path, jobs=HANDLERS),
        env={"GEARWORKER_TIMEOUT_MARGIN": "1"},
        wait_for="hang",
        gearmand=gearmand,
    )
    try:
        queue(gearmand, ("hang", "h1", "normal"))
        wait_until(lambda: _jobs(gearmand, "hang") == (0, 1), 10, what="the job running", process=worker)
        time.sleep(4.0)
        assert _jobs(gearmand, "hang") == (0, 1)
    finally:
        worker.kill()


def test_a_gearworker_frozen_during_a_burst_has_only_one_of_its_jobs_requeued(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """During a burst a worker's grabs bring jobs and no PRE_SLEEP follows, so gearmand's timer is armed, but for
    the newest job only: a worker running 4 jobs at a time (CAN_DO_TIMEOUT 2000), frozen by SIGSTOP, has one job
    put back in the queue about 2 s later; the other 3 stay "running" on it.  The same on 1.1 and 2.0."""
    worker = start_worker(
        [gearmand.address],
        handlers=handlers_dir(tmp_path, jobs=HANDLERS),
        env={"GEARWORKER_TIMEOUT_MARGIN": "1", "GEARWORKER_CONCURRENCY": "4"},
        wait_for="short",
        gearmand=gearmand,
    )
    try:
        queue(gearmand, *(("short", f"s{i}", "normal") for i in range(200)))
        wait_until(lambda: _jobs(gearmand, "short")[1] == 4, 10, what="4 jobs running", process=worker)
        time.sleep(0.5)  # well into the burst
        worker.signal(signal.SIGSTOP)
        time.sleep(0.2)  # grabs already sent are answered
        waiting, running = _jobs(gearmand, "short")
        assert running >= 2  # 4, unless it froze between a result and the grab written with it
        after = (waiting + 1, running - 1)
        wait_until(lambda: _jobs(gearmand, "short") == after, 10, what="one job back in the queue")
        time.sleep(3.0)
        assert _jobs(gearmand, "short") == after, "only one"
    finally:
        worker.signal(signal.SIGCONT)
        worker.kill()


# -- epoch jobs ------------------------------------------------------------------------------------

RECORD = """
import os
import time
from gearworker import handler


@handler("rec")
async def rec(job):
    with open(os.environ["REC_FILE"], "a") as f:
        f.write(f"{job.unique.decode()}\\t{time.time():.3f}\\n")
    return b""
"""


@pytest.mark.gearmand_versions(
    "2.0 sends a NOOP when an epoch job falls due, but only with I/O threads (--threads>=1); 1.1 never does (#101)"
)
def test_epoch_job_without_idle_poll_runs_only_on_2_0_with_io_threads(
    gearmand_factory: MakeGearmand, gearmand_version: Version, tmp_path: Path
) -> None:
    """A gearworker worker asleep with ``idle_poll = 0`` and no heartbeat, a job scheduled 2-3 s ahead, watched until
    4 s after its second.  2.0 with ``--threads=1`` wakes the worker when the job is due; 2.0 with ``--threads=0``
    queues that NOOP but never writes it (no I/O thread to wake), and 1.1 sends none: there the job is still
    queued.  Why gearworker's idle_poll (default 1 s) stays on for every version."""
    handlers = handlers_dir(tmp_path, rec=RECORD)
    cases = {}
    for threads in (0, 1):
        g = gearmand_factory(threads=threads)
        record = tmp_path / f"runs-{threads}.txt"
        record.touch()
        env = {"GEARWORKER_IDLE_POLL": "0", "GEARWORKER_HEARTBEAT_INTERVAL": "0", "REC_FILE": str(record)}
        worker = start_worker([g.address], handlers=handlers, env=env, wait_for="rec", gearmand=g)
        cases[threads] = (g, record, worker)
    try:
        time.sleep(0.5)  # the workers found no work and sleep
        epoch = int(time.time()) + 3
        for g, _record, _worker in cases.values():
            client = RawClient(g.port)
            client.conn.send(request(T.SUBMIT_JOB_EPOCH, b"rec", b"epoch-job", str(epoch).encode(), b""))
            client.conn.wait_for(T.JOB_CREATED)
            client.close()
        time.sleep(max(0.0, epoch + 4 - time.time()))
        ran = {threads: "epoch-job" in record.read_text() for threads, (_g, record, _w) in cases.items()}
        expected = {0: False, 1: gearmand_version.at_least(2)}
        assert ran == expected
        for threads, (g, _record, _worker) in cases.items():
            if not expected[threads]:
                assert _jobs(g, "rec") == (1, 0), "still queued"
    finally:
        for _g, _record, worker in cases.values():
            worker.stop(timeout=5)
