"""Shutdown, the process tree, and jobs that time out or crash their pool process.

Issue, 7: "SIGTERM or SIGINT stops taking new jobs at once, lets in-flight
jobs finish for up to a configured grace period, then disconnects so that the
server re-queues unfinished jobs, terminates the pool, and exits 0.  A second
signal stops at once.  No process is left behind [...] A pid file (optional)
refuses to start a second instance and is removed on exit; a stale one is
detected and replaced.  ``gearworker stop`` signals the running instance."

Issue, 5: "a handler that exceeds its timeout fails its job with a clear
message; an async handler is cancelled, a CPU handler's child process is
killed and replaced.  A child that dies (os._exit, segfault, killed by the OOM
killer) fails only the job it was running; the pool is rebuilt and the server
keeps serving."

Everything runs against a real gearmand and real ``python -m gearworker``
processes; jobs are submitted with the ``gearman`` CLI.  The only durations
asserted are the documented bounds (within the grace period, children gone
within 2 s) and "well under" a 60 s grace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from fakepeer import gearman_cli, run_gearman_cli
from gearmand import Gearmand
from support import ROOT, TEST_HANDLERS, WorkerProcess, start_worker, wait_until

pytestmark = pytest.mark.timeout(120)

NewWorker = Callable[..., WorkerProcess]


@pytest.fixture
def new_worker(gearmand: Gearmand) -> Iterator[NewWorker]:
    """Start workers on the test handlers; any still running at the end are killed."""
    started: list[WorkerProcess] = []

    def start(*args: str, wait_for: str = "cpu_long", processes: int = 2) -> WorkerProcess:
        w = start_worker(
            [gearmand.address],
            "--processes",
            str(processes),
            *args,
            handlers=TEST_HANDLERS,
            wait_for=wait_for,
            gearmand=gearmand,
        )
        started.append(w)
        return w

    yield start
    for w in started:
        if w.poll() is None:
            tree = w.descendants()
            w.kill()
            gone_within(tree, 5)


def gone_within(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Poll until every process has exited (a zombie counts as exited); return those still alive."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [p for p in processes if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kind(p: psutil.Process) -> str:
    cmdline = " ".join(p.cmdline())
    return "forkserver" if "forkserver" in cmdline else "resource_tracker" if "resource_tracker" in cmdline else cmdline


def long_job(tmp_path: Path, seconds: float, name: str = "job") -> tuple[bytes, Path, Path]:
    """A cpu_long/async_long workload; returns (workload, pid file, run-once marker)."""
    pidfile, once = tmp_path / f"{name}.pid", tmp_path / f"{name}.once"
    return json.dumps({"seconds": seconds, "pidfile": str(pidfile), "once": str(once)}).encode(), pidfile, once


def pool_tree(w: WorkerProcess, minimum: int) -> list[psutil.Process]:
    """The worker's descendants once there are at least ``minimum`` (forkserver, resource tracker, pool processes)."""
    wait_until(lambda: len(w.descendants()) >= minimum, what=f"{minimum} descendants of the worker")
    return w.descendants()


def events(w: WorkerProcess, name: str, *, wait: float = 2.0) -> list[dict[str, Any]]:
    """The worker's log records of event ``name``, waiting up to ``wait`` s for a first one.

    Log lines are written in batches (within gearworker.logs.LINGER, 20 ms, of being
    logged), so a line may lag the event the test just saw happen.
    """
    deadline = time.monotonic() + wait
    while True:
        found = w.log_records(name)
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.02)


# -- stopping ---------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_when_idle_exits_0_and_leaves_no_process(
    new_worker: NewWorker, gearmand: Gearmand, sig: signal.Signals
) -> None:
    """SIGTERM/SIGINT of an idle worker: exit 0, and every process it started (forkserver, tracker, pool) is gone."""
    w = new_worker()
    assert run_gearman_cli(gearmand.port, "cpu_echo", b"warm")[1] == b"warm"
    tree = pool_tree(w, 4)
    kinds = sorted(_kind(p) for p in tree)
    assert kinds == ["forkserver"] * 3 + ["resource_tracker"], kinds  # the forkserver and its 2 pool processes
    w.signal(sig)
    assert w.wait(30) == 0, w.log_text()
    assert gone_within(tree, 5) == []
    assert events(w, "server.stopped")


def test_sigterm_during_cpu_job_lets_it_finish_then_exits_0(
    new_worker: NewWorker, gearmand: Gearmand, tmp_path: Path
) -> None:
    """A CPU job running at SIGTERM completes (the client gets its result) before the worker exits 0."""
    w = new_worker("--grace-period", "30")
    workload, pidfile, _ = long_job(tmp_path, 2)
    client = gearman_cli(gearmand.port, "cpu_long", workload)
    wait_until(pidfile.exists, what="the job to start")
    tree = w.descendants()
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0  # within the grace period
    out, err = client.communicate(timeout=10)
    assert out == f"first {pidfile.read_text()}".encode(), err
    assert gone_within(tree, 5) == []


def test_sigterm_stops_taking_new_jobs_at_once(new_worker: NewWorker, gearmand: Gearmand, tmp_path: Path) -> None:
    """After SIGTERM, jobs submitted while another still runs stay queued on the server instead of starting."""
    w = new_worker("--grace-period", "30")
    workload, pidfile, _ = long_job(tmp_path, 3)
    client = gearman_cli(gearmand.port, "cpu_long", workload)
    wait_until(pidfile.exists, what="the job to start")
    w.signal(signal.SIGTERM)
    # Connections with nothing running close at once: echo has no worker left.
    wait_until(lambda: gearmand.status()["echo"][2] == 0, what="echo's worker to disconnect")
    for function in ("echo", "cpu_echo"):  # cpu_echo shares the pool group with the running job
        gearman_cli(gearmand.port, function, b"late", background=True).communicate(timeout=10)
    assert w.wait(30) == 0
    client.communicate(timeout=10)
    status = gearmand.status()
    assert status["echo"][:2] == (1, 0) and status["cpu_echo"][:2] == (1, 0), status


def test_draining_worker_leaves_servers_for_good(new_worker: NewWorker, gearmand: Gearmand, tmp_path: Path) -> None:
    """During the grace period the connections closed at SIGTERM are not re-opened (no reconnect churn or log noise)."""
    w = new_worker("--grace-period", "30")
    workload, pidfile, _ = long_job(tmp_path, 2.5)
    client = gearman_cli(gearmand.port, "cpu_long", workload)
    wait_until(pidfile.exists, what="the job to start")
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    client.communicate(timeout=10)
    lines = w.log_records()
    after = [r["event"] for r in lines[[r["event"] for r in lines].index("server.stopping") :]]
    assert "server.up" not in after and "server.down" not in after, after


def test_job_past_the_grace_period_is_requeued_and_done_by_a_second_worker(
    new_worker: NewWorker, gearmand: Gearmand, tmp_path: Path
) -> None:
    """Grace over: the pool process is killed, the worker exits 0, gearmand re-queues the job for another worker."""
    w = new_worker("--grace-period", "1")
    workload, pidfile, _ = long_job(tmp_path, 60)
    client = gearman_cli(gearmand.port, "cpu_long", workload)
    wait_until(pidfile.exists, what="the job to start")
    tree = w.descendants()
    started = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    assert time.monotonic() - started < 20  # 1 s grace, generously: it did not wait for the 60 s job
    assert gone_within(tree, 5) == []
    wait_until(lambda: gearmand.status()["cpu_long"][:2] == (1, 0), what="the job to be queued again")
    second = new_worker()
    out, err = client.communicate(timeout=30)
    assert out.startswith(b"rerun "), err
    assert int(out.split()[1]) in {p.pid for p in second.descendants()}
    assert events(w, "server.jobs_handed_back")


def test_second_signal_stops_at_once_and_requeues_the_job(
    new_worker: NewWorker, gearmand: Gearmand, tmp_path: Path
) -> None:
    """With a 60 s grace, SIGTERM then SIGTERM again exits 0 well under the grace; the job goes back to the queue."""
    w = new_worker("--grace-period", "60")
    workload, pidfile, _ = long_job(tmp_path, 60)
    client = gearman_cli(gearmand.port, "cpu_long", workload)
    wait_until(pidfile.exists, what="the job to start")
    tree = w.descendants()
    started = time.monotonic()
    w.signal(signal.SIGTERM)
    wait_until(lambda: events(w, "server.draining"), what="the worker to start draining")
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    assert time.monotonic() - started < 30  # well under the 60 s grace
    assert events(w, "server.force_exit")
    assert gone_within(tree, 5) == []
    wait_until(lambda: gearmand.status()["cpu_long"][:2] == (1, 0), what="the job to be queued again")
    new_worker()
    out, err = client.communicate(timeout=30)
    assert out.startswith(b"rerun "), err


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "cpu_job_running"])
def test_sigkill_of_the_worker_takes_its_pool_with_it_within_2s(
    new_worker: NewWorker, gearmand: Gearmand, tmp_path: Path, busy: bool
) -> None:
    """SIGKILL of the worker: forkserver, resource tracker and every pool process are gone within 2 s."""
    w = new_worker()
    client = None
    if busy:
        workload, pidfile, _ = long_job(tmp_path, 60)
        client = gearman_cli(gearmand.port, "cpu_long", workload)
        wait_until(pidfile.exists, what="the job to start")
    else:
        run_gearman_cli(gearmand.port, "cpu_echo", b"warm")
    tree = pool_tree(w, 4)
    w.signal(signal.SIGKILL)
    w.wait(10)
    assert gone_within(tree, 2) == []
    if client is not None:
        client.kill()
        client.wait()


# -- pid file and `gearworker stop` -------------------------------------------


def test_pid_file_refuses_a_second_instance_and_is_removed_on_exit(
    new_worker: NewWorker, gearmand: Gearmand, tmp_path: Path
) -> None:
    """A second worker with the same pid file exits 2 naming the file and the running pid; the first runs on."""
    pid_file = tmp_path / "gw.pid"
    first = new_worker("--pid-file", str(pid_file), wait_for="echo")
    assert pid_file.read_text().strip() == str(first.pid)
    second = WorkerProcess([gearmand.address], handlers=TEST_HANDLERS, args=["--pid-file", str(pid_file)]).start()
    assert second.wait(30) == 2
    assert f"already running as pid {first.pid}" in second.log_text() and str(pid_file) in second.log_text()
    assert first.proc is not None and first.proc.poll() is None
    assert pid_file.read_text().strip() == str(first.pid)
    assert run_gearman_cli(gearmand.port, "echo", b"still here")[1] == b"still here"
    assert first.stop() == 0
    assert not pid_file.exists()


def test_stale_pid_file_is_replaced(new_worker: NewWorker, tmp_path: Path) -> None:
    """A pid file left by a dead process does not block start-up; it is rewritten with the new pid."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid_file = tmp_path / "gw.pid"
    pid_file.write_text(dead.stdout)
    w = new_worker("--pid-file", str(pid_file), wait_for="echo")
    assert pid_file.read_text().strip() == str(w.pid)
    assert w.stop() == 0
    assert not pid_file.exists()


def test_gearworker_stop_signals_the_running_instance(new_worker: NewWorker, tmp_path: Path) -> None:
    """`gearworker stop --pid-file P` stops the worker (exit 0, pool gone, pid file removed) and exits 0 itself."""
    pid_file = tmp_path / "gw.pid"
    w = new_worker("--pid-file", str(pid_file))
    tree = pool_tree(w, 3)
    stop = subprocess.Popen(
        [sys.executable, "-m", "gearworker", "stop", "--pid-file", str(pid_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Reap the worker while `stop` waits: an unreaped child stays a zombie that `stop` would see as alive.
    assert w.wait(30) == 0
    out, err = stop.communicate(timeout=60)
    assert stop.returncode == 0, err
    assert f"pid {w.pid}" in out
    assert not pid_file.exists()
    assert gone_within(tree, 5) == []
    again = subprocess.run(
        [sys.executable, "-m", "gearworker", "stop", "--pid-file", str(pid_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "not running" in again.stderr


# -- timeouts and crashes -------------------------------------------------------


def test_async_handler_past_its_timeout_fails_clearly_and_is_cancelled(
    new_worker: NewWorker, gearmand: Gearmand, tmp_path: Path
) -> None:
    """An async handler over its 1 s timeout: the job fails with a JobTimeout message and the coroutine is cancelled."""
    new_worker(wait_for="async_timeout_marker")
    marker = tmp_path / "marker"
    code, out, err = run_gearman_cli(
        gearmand.port, "async_timeout_marker", json.dumps({"seconds": 2, "marker": str(marker)}).encode()
    )
    assert code != 0 and b"JobTimeout: ran past its 1s timeout" in err, (out, err)
    time.sleep(1.5)  # the handler would have written its marker by now had it not been cancelled
    assert not marker.exists()
    assert run_gearman_cli(gearmand.port, "echo", b"next")[1] == b"next"


def test_cpu_handler_past_its_timeout_has_its_process_killed_and_replaced(
    new_worker: NewWorker, gearmand: Gearmand
) -> None:
    """A CPU handler over its 1 s timeout: the job fails clearly, that pool process is killed, a new one serves."""
    w = new_worker(processes=1)
    before = int(run_gearman_cli(gearmand.port, "cpu_pid", b"x")[1])
    code, out, err = run_gearman_cli(gearmand.port, "cpu_sleep", b"30")
    assert code != 0 and b"JobTimeout: ran past its 1s timeout; its pool process was killed" in err, (out, err)
    assert gone_within([psutil.Process(before)] if psutil.pid_exists(before) else [], 5) == []
    after = int(run_gearman_cli(gearmand.port, "cpu_pid", b"x")[1])
    assert after != before
    assert events(w, "pool.restarted")


def _crash_exit(gearmand: Gearmand, tmp_path: Path) -> tuple[int, bytes, bytes]:
    return run_gearman_cli(gearmand.port, "cpu_exit", b"x")


def _crash_segv(gearmand: Gearmand, tmp_path: Path) -> tuple[int, bytes, bytes]:
    return run_gearman_cli(gearmand.port, "cpu_segv", b"x")


def _crash_oom_kill(gearmand: Gearmand, tmp_path: Path) -> tuple[int, bytes, bytes]:
    """What the OOM killer does: SIGKILL of the pool process, from outside, while it runs a job."""
    workload, pidfile, _ = long_job(tmp_path, 60, "victim")
    client = gearman_cli(gearmand.port, "cpu_long", workload)
    wait_until(pidfile.exists, what="the victim job to start")
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    out, err = client.communicate(timeout=30)
    return client.returncode, out, err


@pytest.mark.parametrize(
    ("crash", "reason"),
    [
        (_crash_exit, b"ChildDied: pool process died (exit code 3) (twice)"),
        (_crash_segv, b"ChildDied: pool process died (killed by SIGSEGV) (twice)"),
    ],
    ids=["os_exit", "segfault"],
)
def test_dying_pool_process_fails_only_its_own_job(
    new_worker: NewWorker,
    gearmand: Gearmand,
    tmp_path: Path,
    crash: Callable[[Gearmand, Path], tuple[int, bytes, bytes]],
    reason: bytes,
) -> None:
    """A handler that kills its pool process fails its own job (after one retry in a fresh process) with the
    reason; the other slot's job completes; the pool is whole."""
    w = new_worker(processes=2)
    workload, pidfile, _ = long_job(tmp_path, 2, "bystander")
    bystander = gearman_cli(gearmand.port, "cpu_long", workload)
    wait_until(pidfile.exists, what="the bystander job to start")
    code, out, err = crash(gearmand, tmp_path)
    assert code != 0 and reason in err, (out, err)
    out, err = bystander.communicate(timeout=30)
    assert out == f"first {pidfile.read_text()}".encode(), err
    # The server keeps serving, with both slots: two CPU jobs run side by side again.
    jobs = [gearman_cli(gearmand.port, "cpu_sleep_echo", f"0.5|{i}".encode()) for i in range(2)]
    assert [j.communicate(timeout=30)[0] for j in jobs] == [b"0.5|0", b"0.5|1"]
    assert run_gearman_cli(gearmand.port, "echo", b"alive")[1] == b"alive"
    assert events(w, "pool.restarted")
    assert w.proc is not None and w.proc.poll() is None


def test_job_of_a_pool_process_killed_from_outside_runs_again(
    new_worker: NewWorker, gearmand: Gearmand, tmp_path: Path
) -> None:
    """The OOM killer's SIGKILL of a busy pool process: the job runs again in a fresh process and completes;
    the other slot's job is untouched."""
    w = new_worker(processes=2)
    workload, pidfile, _ = long_job(tmp_path, 2, "bystander")
    bystander = gearman_cli(gearmand.port, "cpu_long", workload)
    wait_until(pidfile.exists, what="the bystander job to start")
    code, out, err = _crash_oom_kill(gearmand, tmp_path)
    assert code == 0 and out.startswith(b"rerun "), (out, err)
    out, err = bystander.communicate(timeout=30)
    assert out == f"first {pidfile.read_text()}".encode(), err
    assert events(w, "job.retry") and events(w, "pool.restarted")


SLOW_IMPORT = """
import os, time
from pathlib import Path
from gearworker import handler

Path(os.environ["GW_TEST_MARKER"]).write_text("importing")
time.sleep(float(os.environ.get("GW_TEST_IMPORT_SLEEP", "0")))


@handler("echo")
async def echo(job):
    return job.workload
"""

DIES_ONCE_IN_THE_POOL = """
import multiprocessing, os
from gearworker import handler

# Only in a pool process, and only in the first one to get here: die while the pool starts.
if multiprocessing.parent_process() is not None:
    try:
        os.close(os.open(os.environ["GW_TEST_MARKER"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        pass
    else:
        os._exit(3)


@handler("cpu_twice", cpu=True)
def cpu_twice(job):
    return job.workload * 2
"""


def test_sigterm_while_starting_up_is_a_clean_stop(gearmand: Gearmand, tmp_path: Path) -> None:
    """A stop requested while handlers still import (before the event loop runs) exits 0 through shutdown,
    not by the signal's default action (the chaos test saw exit -15)."""
    (tmp_path / "slow_import.py").write_text(SLOW_IMPORT)
    marker = tmp_path / "marker"
    w = WorkerProcess(
        [gearmand.address], handlers=tmp_path, env={"GW_TEST_MARKER": str(marker), "GW_TEST_IMPORT_SLEEP": "1.5"}
    )
    w.start()
    wait_until(marker.exists, what="the handler module to start importing")
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0, w.log_text()
    assert events(w, "server.stopping") and events(w, "server.stopped")


_SIGTERM_DURING_CLI_IMPORT = """
import os, signal, sys

class SigtermOnCliImport:
    # Sends SIGTERM just as the command line starts importing: the window right after start-up.
    def find_spec(self, name, path=None, target=None):
        if name == "gearworker.app.cli":
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SigtermOnCliImport())
from gearworker.app.launch import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_the_command_line_still_imports_is_a_clean_stop(gearmand: Gearmand) -> None:
    """`gearworker` catches stop signals before it imports anything heavy: a SIGTERM right after the
    process started exits 0 through shutdown (the chaos test saw -15 from a worker restarted just
    before the final stop)."""
    cmd = [
        sys.executable,
        "-c",
        _SIGTERM_DURING_CLI_IMPORT,
        "--handlers",
        str(TEST_HANDLERS),
        "--server",
        gearmand.address,
        "--log-format",
        "json",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"server.stopped"' in out.stderr


def test_other_commands_keep_the_default_ctrl_c() -> None:
    """Only the worker catches signals early: `gearworker submit` and friends stay interruptible."""
    from gearworker.app.launch import runs_worker

    assert runs_worker([]) and runs_worker(["run"]) and runs_worker(["--handlers", "h"])
    assert not any(runs_worker([c]) for c in ("submit", "status", "stop", "check", "web", "failed", "--help"))


def test_a_pool_process_killed_while_the_pool_starts_is_replaced(gearmand: Gearmand, tmp_path: Path) -> None:
    """A pool process that dies during start-up (OOM killer, an operator) is replaced and the worker serves,
    instead of exiting with a BrokenProcessPool traceback (found by the chaos test: exit 1)."""
    (tmp_path / "dies_once.py").write_text(DIES_ONCE_IN_THE_POOL)
    w = WorkerProcess(
        [gearmand.address], handlers=tmp_path, args=["--processes", "2"], env={"GW_TEST_MARKER": str(tmp_path / "died")}
    )
    try:
        w.start(wait_for="cpu_twice", gearmand=gearmand)
        assert run_gearman_cli(gearmand.port, "cpu_twice", b"ab")[1] == b"abab"
        assert events(w, "pool.restarted")
        assert (tmp_path / "died").exists()
    finally:
        assert w.stop() == 0, w.log_text()


def test_the_launchers_list_of_commands_is_the_command_lines() -> None:
    """gearworker.app.launch decides, before importing the command line, which commands run the worker."""
    import argparse

    from gearworker.app import cli, launch

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(launch.COMMANDS) == set(sub.choices)


# -- nothing hangs the stop: a pool process stuck at import, a job server that takes nothing ------------

HANGS_AT_IMPORT_IN_THE_POOL = """
import multiprocessing, os, time
from pathlib import Path
from gearworker import handler

# Only in a pool process (the worker imports it too, and must get through): hang while the pool starts.
if multiprocessing.parent_process() is not None:
    Path(os.environ["GW_TEST_MARKERS"], str(os.getpid())).write_text("importing")
    time.sleep(3600)


@handler("cpu_never_ready", cpu=True)
def cpu_never_ready(job):
    return job.workload
"""


def worker_with_hung_pool(gearmand: Gearmand, tmp_path: Path, *args: str) -> tuple[WorkerProcess, list[psutil.Process]]:
    """A worker whose 2 pool processes hang importing the handlers; returns it and its process tree."""
    handlers, markers = tmp_path / "handlers", tmp_path / "markers"
    handlers.mkdir()
    markers.mkdir()
    (handlers / "hangs.py").write_text(HANGS_AT_IMPORT_IN_THE_POOL)
    w = WorkerProcess(
        [gearmand.address], handlers=handlers, args=["--processes", "2", *args], env={"GW_TEST_MARKERS": str(markers)}
    )
    w.start()
    wait_until(lambda: len(list(markers.iterdir())) == 2, what="both pool processes to hang at import", process=w)
    tree = w.descendants()
    assert {p.pid for p in tree} >= {int(m.name) for m in markers.iterdir()}
    return w, tree


def test_sigterm_while_a_pool_process_hangs_at_import_stops_the_start_up_and_leaves_no_process(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """A stop while the pool processes hang importing the handlers (the start-up waits for them) cancels the
    start-up: the worker kills them and exits 0 well within its grace period, leaving no process."""
    w, tree = worker_with_hung_pool(gearmand, tmp_path, "--grace-period", "30")
    try:
        started = time.monotonic()
        w.signal(signal.SIGTERM)
        code = w.wait(30)
        took = time.monotonic() - started
        print(f"exited {code} in {took:.2f} s")
        assert code == 0, w.log_text()
        assert took < 10, w.log_text()  # a 30 s grace: not waited for
        assert gone_within(tree, 5) == []
        assert events(w, "pool.start_stopped") and events(w, "server.stopped")
    finally:
        w.kill()


def test_second_sigterm_while_a_pool_process_hangs_at_import_exits_and_leaves_no_process(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """SIGTERM, then SIGTERM again, while the pool processes hang at import: the worker exits within seconds
    and leaves no process (pool processes, forkserver, resource tracker)."""
    w, tree = worker_with_hung_pool(gearmand, tmp_path, "--grace-period", "60")
    try:
        started = time.monotonic()
        w.signal(signal.SIGTERM)
        wait_until(lambda: events(w, "server.stopping", wait=0) or w.poll() is not None, what="the stop to begin")
        w.signal(signal.SIGTERM)  # a no-op if the first one already ended it
        code = w.wait(30)
        took = time.monotonic() - started
        print(f"exited {code} in {took:.2f} s")
        assert code == 0, w.log_text()
        assert took < 10, w.log_text()
        assert gone_within(tree, 5) == []
    finally:
        w.kill()


def test_second_sigterm_while_a_handler_module_hangs_at_import_in_the_worker_exits_at_once(
    gearmand: Gearmand, tmp_path: Path
) -> None:
    """Before the event loop runs (the worker itself imports a handler module that hangs), the first SIGTERM
    is kept for later and a second one ends the process at once: nothing has started yet that needs stopping."""
    (tmp_path / "slow_import.py").write_text(SLOW_IMPORT)
    marker = tmp_path / "marker"
    w = WorkerProcess(
        [gearmand.address], handlers=tmp_path, env={"GW_TEST_MARKER": str(marker), "GW_TEST_IMPORT_SLEEP": "3600"}
    )
    w.start()
    try:
        wait_until(marker.exists, what="the handler module to start importing", process=w)
        started = time.monotonic()
        w.signal(signal.SIGTERM)
        time.sleep(0.5)  # two signals sent at once may arrive as one
        w.signal(signal.SIGTERM)
        code = w.wait(30)
        took = time.monotonic() - started
        print(f"exited {code} in {took:.2f} s")
        assert code == 0 and took < 10, w.log_text()
        assert "second SIGTERM while starting" in w.log_text()
    finally:
        w.kill()


BIG_RESULT_LATER = """
import asyncio, os
from pathlib import Path
from gearworker import handler


@handler("big_result_later")
async def big_result_later(job):
    # Started: the test freezes gearmand now, then the result (far more than the socket buffers hold) is queued.
    Path(os.environ["GW_TEST_MARKER"]).write_text("started")
    await asyncio.sleep(1)
    return b"x" * (64 * 1024 * 1024)
"""


def worker_stuck_on_a_hung_gearmand(gearmand: Gearmand, tmp_path: Path, grace: float) -> WorkerProcess:
    """A worker whose connection holds a 64 MiB result that a SIGSTOPped gearmand does not read, with nothing
    else to end the connection: heartbeat and TCP keepalive off.  The caller SIGCONTs gearmand."""
    handlers, marker = tmp_path / "handlers", tmp_path / "started"
    handlers.mkdir()
    (handlers / "big.py").write_text(BIG_RESULT_LATER)
    env = {"GW_TEST_MARKER": str(marker), "GEARWORKER_HEARTBEAT_INTERVAL": "0", "GEARWORKER_KEEPALIVE_IDLE": "0"}
    w = start_worker(
        [gearmand.address],
        "--grace-period",
        str(grace),
        handlers=handlers,
        env=env,
        wait_for="big_result_later",
        gearmand=gearmand,
    )
    gearman_cli(gearmand.port, "big_result_later", b"", background=True).communicate(timeout=10)
    wait_until(marker.exists, what="the job to start", process=w)
    assert gearmand.proc is not None
    gearmand.proc.send_signal(signal.SIGSTOP)
    wait_until(lambda: events(w, "job.done", wait=0), what="the result to be queued", process=w)
    return w


def test_sigterm_with_a_hung_gearmand_exits_within_the_grace_period(gearmand: Gearmand, tmp_path: Path) -> None:
    """A connection to a gearmand that takes nothing (SIGSTOPped, its socket full) cannot close cleanly: the
    worker waits for it what is left of the grace period, then drops it and exits 0."""
    w = worker_stuck_on_a_hung_gearmand(gearmand, tmp_path, grace=2)
    try:
        started = time.monotonic()
        w.signal(signal.SIGTERM)
        code = w.wait(60)
        took = time.monotonic() - started
        print(f"exited {code} in {took:.2f} s (grace period 2 s)")
        assert code == 0, w.log_text()
        assert took < 10, w.log_text()  # 2 s of grace, generously; unbounded, it never ends
        assert events(w, "server.close_timeout")
    finally:
        assert gearmand.proc is not None
        gearmand.proc.send_signal(signal.SIGCONT)
        w.kill()


def test_second_sigterm_with_a_hung_gearmand_exits_at_once(gearmand: Gearmand, tmp_path: Path) -> None:
    """The same hung gearmand with a 60 s grace period: a second SIGTERM drops the connection and the worker
    exits 0 at once."""
    w = worker_stuck_on_a_hung_gearmand(gearmand, tmp_path, grace=60)
    try:
        w.signal(signal.SIGTERM)
        wait_until(lambda: events(w, "server.stopping", wait=0), what="the stop to begin", process=w)
        started = time.monotonic()
        w.signal(signal.SIGTERM)
        code = w.wait(60)
        took = time.monotonic() - started
        print(f"exited {code} in {took:.2f} s after the second SIGTERM")
        assert code == 0, w.log_text()
        assert took < 5, w.log_text()
        assert events(w, "server.force_exit")
    finally:
        assert gearmand.proc is not None
        gearmand.proc.send_signal(signal.SIGCONT)
        w.kill()
