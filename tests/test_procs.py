"""gearworker.procs: is_running (live, gone, zombie, another user's) and die_with_parent in a real child."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from support import wait_until

from gearworker.procs import is_running


def test_this_process_is_running() -> None:
    """is_running(our own pid) is True."""
    assert is_running(os.getpid())


def test_a_reaped_process_is_not_running() -> None:
    """Once a child has exited and been reaped its pid no longer exists: False."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not is_running(proc.pid)


def test_a_zombie_is_not_running() -> None:
    """A child that exited but is not reaped yet (state Z in /proc) is not running, though kill(pid, 0) works."""
    proc = subprocess.Popen(["true"])
    try:
        # Wait for the exit without reaping it (WNOWAIT), so it stays a zombie.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        assert Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        os.kill(proc.pid, 0)  # the pid still exists...
        assert not is_running(proc.pid)  # ...but nothing runs under it
    finally:
        proc.wait()


def test_a_zombie_whose_name_has_a_parenthesis_and_spaces_is_still_seen_as_a_zombie(tmp_path: Path) -> None:
    """The state is read after the last ")" of /proc/PID/stat, so a command name like "a) R (" cannot fool it."""
    tricky = tmp_path / "a) R ("
    tricky.symlink_to("/bin/true")
    proc = subprocess.Popen([str(tricky)])
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        assert not is_running(proc.pid)
    finally:
        proc.wait()


def test_a_process_of_another_user_counts_as_running() -> None:
    """kill(pid, 0) on another user's process raises PermissionError: it is there, so True.

    As root the check runs in a forked child that drops to uid 65534 (nobody)
    first; pid 1 belongs to root either way.
    """
    if os.geteuid() != 0:
        assert is_running(1)
        return
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock the child. This child only
        # makes system calls and leaves with os._exit (no lock taken); a subprocess cannot be used,
        # nobody may not run the interpreter under /root.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report two facts through the pipe, then leave without running pytest's cleanup
        code = b"?"
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                os.kill(1, 0)
                denied = b"0"
            except PermissionError:
                denied = b"1"
            code = denied + (b"1" if is_running(1) else b"0")
        finally:
            os.write(write, code)
            os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 8)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert answer == b"11", "expected kill(1, 0) denied as nobody and is_running(1) True"


# -- die_with_parent -----------------------------------------------------------------

# The middle process: starts a grandchild, waits until it is ready, prints its pid and
# then sleeps until the test SIGKILLs it.
MIDDLE = r"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], stdout=subprocess.PIPE)
assert child.stdout.readline() == b"ready\n"
print(child.pid, flush=True)
time.sleep(60)
"""

# The grandchild: asks for a signal on its parent's death (or not), then waits.
GRANDCHILD = r"""
import signal, sys, time
from gearworker.procs import die_with_parent
marker, sig = sys.argv[1], sys.argv[2]
def on_signal(signum, frame):
    open(marker, "w").write(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_signal)
if sig != "none":
    die_with_parent(signal.Signals[sig]) if sig != "default" else die_with_parent()
print("ready", flush=True)
time.sleep(60)
"""


def start_family(marker: Path, sig: str) -> tuple[subprocess.Popen[bytes], int]:
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE, GRANDCHILD, str(marker), sig], stdout=subprocess.PIPE)
    assert middle.stdout is not None
    line = middle.stdout.readline()
    assert line, "the middle process did not start its child"
    return middle, int(line)


def kill_middle(middle: subprocess.Popen[bytes]) -> None:
    middle.send_signal(signal.SIGKILL)
    middle.wait(10)
    assert middle.stdout is not None
    middle.stdout.close()


def state(pid: int) -> str:
    """What /proc says about ``pid``, for an assertion message."""
    try:
        return Path(f"/proc/{pid}/status").read_text()[:400]
    except OSError as e:
        return f"gone ({e})"


def kill_quietly(pid: int) -> None:
    """Leave no sleeper behind when a test fails (the pid is an orphan now, not ours to reap)."""
    if is_running(pid):  # only one still running: a dead orphan's pid may be reused by anything
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_die_with_parent_kills_the_child_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    """By default the child gets SIGKILL when its parent dies, even a parent killed without any cleanup."""
    middle, grandchild = start_family(tmp_path / "marker", "default")
    try:
        kill_middle(middle)
        wait_until(lambda: not is_running(grandchild), 30, what="the orphan to die", detail=lambda: state(grandchild))
        assert not (tmp_path / "marker").exists()  # SIGKILL: no handler ran
    finally:
        kill_quietly(grandchild)


def test_die_with_parent_delivers_the_signal_asked_for(tmp_path: Path) -> None:
    """die_with_parent(SIGTERM) sends SIGTERM, so the child can clean up (gearmand saves its queue)."""
    marker = tmp_path / "marker"
    middle, grandchild = start_family(marker, "SIGTERM")
    try:
        kill_middle(middle)
        wait_until(lambda: not is_running(grandchild), 30, what="the orphan to die", detail=lambda: state(grandchild))
        assert marker.read_text() == "SIGTERM"
    finally:
        kill_quietly(grandchild)


def test_without_die_with_parent_the_orphan_survives(tmp_path: Path) -> None:
    """The control case: a child that did not ask keeps running after its parent is SIGKILLed."""
    middle, grandchild = start_family(tmp_path / "marker", "none")
    try:
        kill_middle(middle)
        time.sleep(0.3)
        assert is_running(grandchild)
    finally:
        kill_quietly(grandchild)


_FAULTS = """
import resource, sys
from gearworker.procs import keep_big_buffers
if sys.argv[1] == "keep":
    assert keep_big_buffers()
piece = b"p" * 256_000
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(40):  # the buffers of 40 photo jobs of 3 MB, as the worker process makes and frees them
    buf = bytearray()
    for _ in range(12):
        buf += bytes(piece)  # a read from the socket, appended to the parser's buffer
    with memoryview(buf) as view:
        photo = bytes(view[12:])  # the workload cut out of the packet
    buf.clear()
    result = photo[:500_000] + b"x"
    del photo, result, buf
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True, timeout=60)
    return int(out.stdout)


def test_keep_big_buffers_reuses_freed_megabyte_buffers_instead_of_faulting_fresh_pages() -> None:
    """By default each job's buffers fault in fresh pages (~1,500 a job here); kept, the first job's serve all."""
    default, kept = _page_faults("default"), _page_faults("keep")
    assert default > 40 * 1000, default
    assert kept < default / 10, (kept, default)
