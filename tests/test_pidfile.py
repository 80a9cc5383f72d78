"""gearworker.app.pidfile: acquire/release, a live second instance refused, stale and recycled pids replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gearworker.app.pidfile import PidFile, read_pid
from gearworker.errors import ConfigError

#: The pid file's path and the other instance holding it.
Holder = tuple[Path, "subprocess.Popen[bytes]"]

# A second gearworker holding the pid file: its command line contains "gearworker", as a real one's does.
HOLDER = r"""
import sys, time
from gearworker.app.pidfile import PidFile
PidFile(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Holder]:
    """Another process that acquired ``tmp_path/gearworker.pid`` and is still running."""
    path = tmp_path / "gearworker.pid"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
        yield path, proc
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_acquire_writes_our_pid_and_release_removes_the_file(tmp_path: Path) -> None:
    """The file holds "PID\\n" (mode 0644) while we run and is gone after release()."""
    path = tmp_path / "gearworker.pid"
    pid_file = PidFile(path)
    pid_file.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    assert path.stat().st_mode & 0o777 == 0o644 & ~_umask()
    assert read_pid(path) == os.getpid()
    pid_file.release()
    assert not path.exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_live_second_instance_is_refused_with_a_config_error_naming_the_file(holder: Holder) -> None:
    """Another running gearworker holds the file: ConfigError names the file, the setting and its pid."""
    path, proc = holder
    pid = proc.pid
    with pytest.raises(ConfigError) as info:
        PidFile(path).acquire()
    assert str(info.value) == f"{path}: setting 'pid_file': gearworker is already running as pid {pid}"
    assert (info.value.file, info.value.setting) == (str(path), "pid_file")
    assert read_pid(path) == pid  # the other instance's file is left alone


def test_release_leaves_a_file_that_is_not_ours(holder: Holder) -> None:
    """release() deletes the file only if it still holds our pid (another instance may own it now)."""
    path, proc = holder
    pid = proc.pid
    PidFile(path).release()
    assert read_pid(path) == pid


def test_a_stale_pid_of_a_process_that_is_gone_is_replaced(tmp_path: Path) -> None:
    """A file left by a crashed instance (its pid no longer exists) is taken over."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    path = tmp_path / "gearworker.pid"
    path.write_text(f"{gone.pid}\n")
    PidFile(path).acquire()
    assert read_pid(path) == os.getpid()


def test_a_recycled_pid_that_is_not_gearworker_is_replaced(tmp_path: Path) -> None:
    """The pid is alive but belongs to an unrelated program (pid reuse after a crash): not us, so replaced."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        path = tmp_path / "gearworker.pid"
        path.write_text(f"{other.pid}\n")
        PidFile(path).acquire()
        assert read_pid(path) == os.getpid()
    finally:
        other.kill()
        other.wait()


def test_a_file_holding_our_own_pid_is_taken_over(tmp_path: Path) -> None:
    """A leftover with our pid (a previous run that had the same pid) does not stop us."""
    path = tmp_path / "gearworker.pid"
    path.write_text(f"{os.getpid()}\n")
    PidFile(path).acquire()
    assert path.read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize("content", ["", "not a pid\n", "12 34\n"])
def test_an_unreadable_pid_file_is_replaced(tmp_path: Path, content: str) -> None:
    """Empty or garbled contents (a crash mid-write) count as stale."""
    path = tmp_path / "gearworker.pid"
    path.write_text(content)
    PidFile(path).acquire()
    assert read_pid(path) == os.getpid()


def test_a_pid_file_in_a_missing_folder_is_a_config_error_chained_from_the_os_error(tmp_path: Path) -> None:
    """It cannot be created: ConfigError "cannot create pid file: ..." naming the file and the setting."""
    path = tmp_path / "no such folder" / "gearworker.pid"
    with pytest.raises(ConfigError) as info:
        PidFile(path).acquire()
    assert str(info.value).startswith(f"{path}: setting 'pid_file': cannot create pid file: ")
    assert "No such file or directory" in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_release_without_a_file_does_nothing(tmp_path: Path) -> None:
    """release() on a missing file (someone deleted it) does not raise."""
    PidFile(tmp_path / "gearworker.pid").release()


def test_read_pid(tmp_path: Path) -> None:
    """read_pid: the number with blanks around it, None for a missing or non-numeric file."""
    path = tmp_path / "p"
    assert read_pid(path) is None
    path.write_text(" 1234 \n")
    assert read_pid(path) == 1234
    path.write_text("x")
    assert read_pid(path) is None


def test_after_the_holder_is_killed_the_next_instance_takes_over(holder: Holder) -> None:
    """A SIGKILLed instance leaves its file behind; the next start replaces it instead of refusing."""
    path, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    PidFile(path).acquire()
    assert read_pid(path) == os.getpid()
