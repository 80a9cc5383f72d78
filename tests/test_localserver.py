"""gearworker.app.localserver.LocalGearmand: reuse a listening server, else start one, stop it, and die with us."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
from gearmand import Gearmand, free_port
from support import wait_until

from gearworker.app.localserver import LocalGearmand, _listening
from gearworker.errors import ConfigError
from gearworker.procs import is_running


def gearmand_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if p.name() == "gearmand"]


async def test_a_gearmand_already_listening_is_used_and_left_running(gearmand: Gearmand) -> None:
    """Something listens on the port: start() starts nothing, stop() leaves that server alone."""
    local = LocalGearmand(gearmand.port)
    assert local.address == gearmand.address
    before = gearmand_children()
    await local.start()
    assert gearmand_children() == before  # only the fixture's gearmand
    await local.stop()
    assert gearmand.proc is not None and gearmand.proc.poll() is None
    assert _listening(gearmand.port)


async def test_without_a_server_one_is_started_on_the_port_and_stopped() -> None:
    """Nothing listens: start() runs gearmand on 127.0.0.1:PORT and returns once it accepts; stop() ends it."""
    port = free_port()
    assert not _listening(port)
    local = LocalGearmand(port)
    await local.start()
    try:
        started = gearmand_children()
        assert len(started) == 1
        cmdline = started[0].cmdline()
        assert "--listen=127.0.0.1" in cmdline and f"--port={port}" in cmdline
        assert _listening(port)
    finally:
        await local.stop()
    assert not started[0].is_running() or started[0].status() == psutil.STATUS_ZOMBIE
    assert not _listening(port)
    assert gearmand_children() == []


async def test_stop_twice_or_without_start_does_nothing() -> None:
    """stop() is safe to call when nothing was started, and a second time."""
    local = LocalGearmand(free_port())
    await local.stop()
    await local.start()
    await local.stop()
    await local.stop()
    assert gearmand_children() == []


async def test_without_gearmand_installed_the_error_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """No gearmand binary: ConfigError on 'servers' telling how to install it or set servers.

    (A lookup that finds nothing stands in for an uninstalled package: this machine has one.)
    """
    monkeypatch.setattr("gearworker.app.localserver.shutil.which", lambda *args, **kwargs: None)
    with pytest.raises(ConfigError) as info:
        await LocalGearmand(free_port()).start()
    assert info.value.setting == "servers"
    assert str(info.value) == (
        "setting 'servers': no job server is configured and gearmand is not installed "
        "(apt-get install gearman-job-server, or set servers)"
    )


# Starts a LocalGearmand, prints "pid N" (after structlog's own lines), then waits to be killed.
OWNER = r"""
import asyncio, sys
import psutil
from gearworker.app.localserver import LocalGearmand

async def main() -> None:
    await LocalGearmand(int(sys.argv[1])).start()
    (child,) = psutil.Process().children()
    print("pid", child.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_the_started_gearmand_exits_when_its_owner_is_sigkilled() -> None:
    """A worker killed with SIGKILL (no cleanup runs) leaves no gearmand behind: it gets SIGTERM and exits."""
    port = free_port()
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(port)], stdout=subprocess.PIPE)
    assert owner.stdout is not None
    child = 0
    try:
        for line in owner.stdout:
            if line.startswith(b"pid "):
                child = int(line.split()[1])
                break
        assert child, "the owner process did not start gearmand"
        assert psutil.Process(child).name() == "gearmand" and _listening(port)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        wait_until(lambda: not is_running(child), 30, what="gearmand to die with its owner (it outlived it)")
        assert not _listening(port)
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
        if child and is_running(child):
            os.kill(child, signal.SIGKILL)
