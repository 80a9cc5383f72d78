"""A job server that vanishes silently, then comes back on the same address (a reboot).

The host's packets are dropped for good (so no FIN or RST ever arrives), gearmand
is killed with SIGKILL and a new one starts on the same port.  Only liveness
checks (application heartbeat, TCP keepalive) can tell the old connections are
dead.  Default settings: heartbeat after 10 s idle, dead 10 s later; keepalive
10 s + 3 x 5 s; so detection within 30 s, and the tests wait at most 60 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest
from gearmand import free_port
from netlab import Lab, figure
from support import wait_until

from gearworker import Client
from gearworker.errors import ConnectionLost

BOUND = 60.0  # seconds: the documented bound for a job on the rebooted server, with default settings


def _vanish_and_reboot(lab: Lab, *, heartbeat: bool) -> tuple[float, float]:
    """Worker and a waiting client on gearmand; its host vanishes and reboots.  Returns (seconds until the
    client's job failed with ConnectionLost, seconds until a job on the new gearmand was done)."""
    g = lab.gearmand()
    env = {} if heartbeat else {"GEARWORKER_HEARTBEAT_INTERVAL": "0"}
    worker = lab.worker([g.address], env=env).start(wait_for="net_echo", gearmand=g)

    async def scenario() -> tuple[float, float]:
        async with Client([g.address], heartbeat_interval=None if heartbeat else 0.0) as waiting:
            # A foreground job nobody can run: it waits on the server until the server is declared dead.
            stuck = asyncio.create_task(waiting.submit("nobody_runs_this", b"x"))
            while g.status().get("nobody_runs_this", (0, 0, 0))[0] < 1:
                await asyncio.sleep(0.05)
            # Vanish: every packet of the existing connections (worker's and this client's) is lost...
            lab.netns.drop_connections_of(worker.pid, g.port)
            lab.netns.drop_connections_of(os.getpid(), g.port)
            g.kill()  # ...so this process's FINs never arrive
            g.start()  # the reboot: same address, empty queues
            vanished = time.monotonic()
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(stuck, BOUND)
            client_detected = time.monotonic() - vanished
        async with Client([g.address]) as fresh:
            result = await fresh.submit("net_echo", b"after the reboot", timeout=BOUND - client_detected)
        assert result == b"after the reboot"
        return client_detected, time.monotonic() - vanished

    times = lab.netns.run_async(scenario)
    assert worker.proc is not None and worker.proc.poll() is None, "the worker must not have restarted"
    return times


def test_worker_and_client_survive_a_server_that_vanishes_and_reboots(lab: Lab) -> None:
    """After a silent loss and a reboot on the same address, with default settings and no worker restart:
    a foreground job that was waiting on the vanished server fails with ConnectionLost within 60 s, and a job
    submitted to the new gearmand completes within 60 s."""
    client_detected, job_done = _vanish_and_reboot(lab, heartbeat=True)
    figure("silent loss (defaults): client job failed with ConnectionLost after", f"{client_detected:.1f} s")
    figure("silent loss (defaults): job on the rebooted gearmand done after", f"{job_done:.1f} s")


def test_tcp_keepalive_alone_detects_a_vanished_server(lab: Lab) -> None:
    """With the heartbeat off (worker and client), TCP keepalive with its defaults (10 s idle + 3 x 5 s) plus
    TCP_USER_TIMEOUT (the same 25 s for data left unacknowledged, e.g. the idle worker's grabs) still detects the
    vanished server: the client's job fails and a job on the rebooted gearmand completes, within 60 s."""
    client_detected, job_done = _vanish_and_reboot(lab, heartbeat=False)
    figure("silent loss (keepalive only): client's job failed after", f"{client_detected:.1f} s")
    figure("silent loss (keepalive only): job on the rebooted gearmand done after", f"{job_done:.1f} s")


def _status(lab: Lab, port: int, function: str) -> tuple[int, int, int]:
    """``status`` of the gearmand on 127.0.0.1:port inside the lab's namespace (queued, running, workers)."""
    try:
        answer = lab.netns.call(_admin, "127.0.0.1", port, "status")
    except OSError:  # not listening yet
        return 0, 0, 0
    for line in answer.splitlines():
        name, _, rest = line.partition("\t")
        if name == function:
            queued, running, workers = (int(x) for x in rest.split("\t"))
            return queued, running, workers
    return 0, 0, 0


def _admin(host: str, port: int, command: str) -> str:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(command.encode() + b"\n")
        data = b""
        while not (data == b".\n" or data.endswith(b"\n.\n")):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.decode()


def test_a_running_job_of_a_worker_that_vanishes_goes_to_another_worker(lab: Lab) -> None:
    """The gearmand that `gearworker run` starts (no server configured) uses TCP keepalive: when the worker
    holding a job vanishes without a FIN (its packets dropped both ways, for good, while the job runs), gearmand
    notices, hands the job to another worker, and the waiting client gets its result (within 40 s; measured
    about 11 s: keepalive idle 5 s + 3 probes 2 s apart).  With the kernel's keepalive timing (Debian's gearmand
    as installed) it notices after about 2 h 11 min: the job stays "running" on a connection that no longer
    exists, no other worker gets it, and the client waits until its own timeout."""
    port = free_port()
    env = {"GEARWORKER_LOCAL_GEARMAND_PORT": str(port)}
    vanishing = lab.worker([], env=env).start()
    wait_until(lambda: _status(lab, port, "net_hold")[2] == 1, timeout=20, what="the worker and its gearmand")
    assert vanishing.log_records("gearmand.started"), "the worker started its local gearmand"

    async def scenario() -> tuple[bytes, float]:
        async with Client([f"127.0.0.1:{port}"]) as client:
            job = asyncio.create_task(client.submit("net_hold", b"600", unique="held", timeout=45))
            while _status(lab, port, "net_hold")[1] != 1:
                await asyncio.sleep(0.05)
            lab.worker([f"127.0.0.1:{port}"], env={"NET_FAST": "1"}).start()
            while _status(lab, port, "net_hold")[2] != 2:
                await asyncio.sleep(0.05)
            # Vanish: its packets are lost for good, and it never comes back (a host powered off). Stopped,
            # too: a live process would reconnect after its own heartbeat (20 s) and could take the job back.
            lab.netns.drop_connections_of(vanishing.pid, port)
            vanishing.signal(signal.SIGSTOP)
            cut = time.monotonic()
            try:
                result = await job
            finally:
                vanishing.signal(signal.SIGCONT)
            return result, time.monotonic() - cut

    result, waited = lab.netns.run_async(scenario)
    assert result == b"600"
    figure("worker vanished holding a job: the client's result came after", f"{waited:.1f} s")
    assert waited < 40.0
