"""Every command line ends quietly when its reader goes away (``gearworker failed list | head -2``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gearworker.failed import FailedJob, open_store
from gearworker.procs import EXIT_CLOSED_PIPE

ROOT = Path(__file__).resolve().parent.parent


def _first_line_then_close(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``argv``, read one line of its output, close the pipe: its exit status and its stderr."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(timeout=60), err


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_failed_list_into_a_closed_pipe_ends_quietly_with_the_sigpipe_status(tmp_path: Path, extra: list[str]) -> None:
    """More records than a pipe holds: the reader stops after one line; no BrokenPipeError traceback."""
    store = open_store(tmp_path / "failed.db")
    for i in range(3000):
        store.add(FailedJob("resize", f"H:{i}", f"u-{i}", "ValueError: boom", 1, b"x", 1))
    gearworker = str(Path(sys.executable).parent / "gearworker")
    status, err = _first_line_then_close(
        [gearworker, "failed", "list", "--store", str(tmp_path / "failed.db"), *extra], tmp_path
    )
    assert err == ""
    assert status == EXIT_CLOSED_PIPE


def test_help_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    status, err = _first_line_then_close([sys.executable, "-m", "gearworker", "--help"], tmp_path)
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert status in (0, EXIT_CLOSED_PIPE)  # the help may fit the pipe's buffer before it closes
