"""The worker's settings reach its pool processes, whatever file or flag they came from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gearmand import Gearmand
from support import ROOT, handlers_dir

PROBE = """
from gearworker import CpuJob, config, handler

@handler("settings_probe", cpu=True)
def settings_probe(job: CpuJob) -> str:
    return str(config.active().max_image_pixels)
"""


def test_pool_processes_see_the_settings_file_given_with_settings(gearmand: Gearmand, tmp_path: Path) -> None:
    """--settings FILE outside the working directory: cpu handlers read its values via config.active()."""
    handlers = handlers_dir(tmp_path, probe=PROBE)
    settings = tmp_path / "elsewhere.py"
    settings.write_text(
        f"SERVERS = [{gearmand.address!r}]\nHANDLERS_DIR = {str(handlers)!r}\n"
        "MAX_IMAGE_PIXELS = 1234\nPROCESSES = 1\nLOG_FORMAT = 'json'\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gearworker", "--settings", str(settings)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = 200
        while gearmand.status().get("settings_probe", (0, 0, 0))[2] == 0 and deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            subprocess.run(["sleep", "0.1"], check=True)
            deadline -= 1
        out = subprocess.run(
            ["gearman", "-p", str(gearmand.port), "-f", "settings_probe", "--", "x"],
            capture_output=True,
            timeout=20,
            check=True,
        )
        assert out.stdout == b"1234"
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
