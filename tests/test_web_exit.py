"""The web app's process ends with status 0 after a SIGTERM, as container engines expect of a clean stop.

Docker and podman send SIGTERM on `stop`/`down`; a process that then dies by the signal
reports exit 143, which reads as a failed stop: `down` must see every container exit 0.
This runs the real ``python -m gearworker.web`` and stops it like an engine.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
from gearmand import free_port


def test_web_app_exits_0_on_sigterm_once_it_has_shut_down() -> None:
    """SIGTERM to a serving web app: it stops listening and the process exits 0 (not 143)."""
    port = free_port()
    # No job server on port 1: the web app serves without one (start order in a compose stack).
    proc = subprocess.Popen(
        [sys.executable, "-m", "gearworker.web", "--port", str(port), "--server", "127.0.0.1:1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/config", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the web app did not answer within 30 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0].decode()
        assert proc.returncode == 0, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
