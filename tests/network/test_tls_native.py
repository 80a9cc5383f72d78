"""TLS served by gearmand itself (``--ssl``), without stunnel.

gearmand 2.0.0 serves TLS; Debian's 1.1.20 accepts the same flags and serves plaintext (built without
SSL).  Each test expects each version's behaviour; stunnel in front of gearmand is test_tls.py's.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from gearmand import Gearmand, Version
from netlab import HERE, Pki, make_pki
from support import MakeGearmand, WorkerProcess, wait_until

from gearworker import Client
from gearworker.errors import NoServerAvailable

NATIVE = "gearmand 2.0.0 serves TLS with --ssl; Debian's 1.1.20 accepts --ssl and serves plaintext (built without SSL)"


def _ssl_args(pki: Pki) -> list[str]:
    return ["--ssl", f"--ssl-ca-file={pki.ca}", f"--ssl-certificate={pki.server_cert}", f"--ssl-key={pki.server_key}"]


@pytest.fixture
def tls_gearmand(gearmand_factory: MakeGearmand, pki: Pki) -> Gearmand:
    """gearmand with ``--ssl``, and ``--threads=2``: with ``--threads=0`` 2.0.0 stops accepting after one failed
    handshake (test below), and with 1 a connection that never starts its handshake holds the only I/O thread.
    (Readiness is read from /proc, not probed by a connection.)"""
    return gearmand_factory(threads=2, extra=_ssl_args(pki))


def _context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _tls_worker(g: Gearmand, ca: Path, hostname: str = "localhost") -> WorkerProcess:
    env = {"GEARWORKER_TLS": "true", "GEARWORKER_TLS_CA_FILE": str(ca), "GEARWORKER_TLS_SERVER_HOSTNAME": hostname}
    return WorkerProcess([g.address], handlers=HERE / "handlers", env=env).start()


def _tls_failure(g: Gearmand, version: Version) -> str:
    """What gearworker says when it cannot make TLS with ``g``: the certificate check (2.0) or, on 1.1, the
    server dropping the connection in the handshake (it read the ClientHello as a bad packet)."""
    if version.at_least(2):
        return "CERTIFICATE_VERIFY_FAILED"
    return "the server closed the connection during the TLS handshake"


async def _workers_of(g: Gearmand, pki: Pki, function: str) -> int:
    """Workers gearmand lists for ``function``, asked over TLS (a ``--ssl`` gearmand speaks nothing else)."""
    async with Client([g.address], tls=_context(pki.ca)) as c:
        status = await c.server_status()
    return sum(row.workers for row in status[g.address] if row.function == function)


@pytest.mark.gearmand_versions(NATIVE)
async def test_native_tls_runs_a_job_on_2_0_and_fails_clearly_on_1_1(
    tls_gearmand: Gearmand, pki: Pki, gearmand_version: Version, tmp_path: Path
) -> None:
    """Worker and client with the right CA (settings tls, tls_ca_file, tls_server_hostname; Client(tls=...)).

    2.0: a job runs end to end, and a client presenting a certificate from an unrelated CA runs one too:
    gearmand 2.0.0 neither asks for nor checks client certificates (mutual TLS needs stunnel).  1.1: the client
    raises NoServerAvailable naming the server and TLS, the worker logs the same and never registers: no
    plaintext fallback."""
    g = tls_gearmand
    worker = _tls_worker(g, pki.ca)
    try:
        if gearmand_version.at_least(2):
            async with Client([g.address], tls=_context(pki.ca)) as c:
                assert await c.submit("net_echo", b"over native tls", timeout=30) == b"over native tls"
            stranger = make_pki(tmp_path / "unrelated")
            async with Client([g.address], tls=_context(pki.ca, stranger.client_cert, stranger.client_key)) as c:
                assert await c.submit("net_echo", b"any client cert", timeout=30) == b"any client cert"
        else:
            async with Client([g.address], tls=_context(pki.ca)) as c:
                with pytest.raises(NoServerAvailable) as caught:
                    await c.submit("net_echo", b"x", timeout=30)
            message = str(caught.value)
            assert f"TLS with job server {g.address} failed" in message and _tls_failure(g, gearmand_version) in message
            wait_until(
                lambda: f"TLS with job server {g.address} failed" in worker.log_text(),
                20,
                what="the worker to log the TLS failure",
                process=worker,
            )
            assert g.status().get("net_echo", (0, 0, 0))[2] == 0, "nothing reached gearmand in plaintext"
    finally:
        worker.stop(timeout=5)


@pytest.mark.gearmand_versions(NATIVE)
@pytest.mark.parametrize("wrong", ["ca", "host-name"])
async def test_native_tls_with_a_wrong_ca_or_host_name_fails_clearly_and_never_falls_back_to_plaintext(
    tls_gearmand: Gearmand, pki: Pki, gearmand_version: Version, wrong: str
) -> None:
    """A worker and a client checking the server certificate against another CA, or against the host name
    ``wrong.example``: the client raises NoServerAvailable naming the server and the TLS cause
    (CERTIFICATE_VERIFY_FAILED on 2.0), the worker logs it and keeps retrying, and gearmand lists no worker.
    On 2.0 gearmand (--threads=2) still serves a good client after those failed handshakes."""
    g = tls_gearmand
    ca, hostname = (pki.other_ca, "localhost") if wrong == "ca" else (pki.ca, "wrong.example")
    expected = _tls_failure(g, gearmand_version)
    worker = _tls_worker(g, ca, hostname)
    try:
        wait_until(
            lambda: any(
                g.address in line and expected in line for line in worker.log_text().splitlines() if "TLS" in line
            ),
            20,
            what=f"the worker to log a TLS failure naming the server and {expected!r}",
            process=worker,
        )
        async with Client([g.address], tls=_context(ca), tls_server_hostname=hostname) as c:
            with pytest.raises(NoServerAvailable) as caught:
                await c.submit("net_echo", b"x", timeout=30)
        message = str(caught.value)
        assert f"TLS with job server {g.address} failed" in message and expected in message, message
        assert worker.poll() is None, "it keeps retrying, like any server that is down"
        if gearmand_version.at_least(2):
            assert await _workers_of(g, pki, "net_echo") == 0
        else:
            assert g.status().get("net_echo", (0, 0, 0))[2] == 0
    finally:
        worker.stop(timeout=5)


def _handshake(port: int, ca: Path, timeout: float) -> str:
    """One TLS handshake with 127.0.0.1:port: the TLS version, or why it failed."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
            _context(ca).wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            return str(tls.version())
    except TimeoutError:
        return "timed out"
    except (ssl.SSLError, OSError) as e:
        return f"{type(e).__name__}: {e}"


@pytest.mark.gearmand_versions(NATIVE)
def test_native_tls_with_threads_0_stops_accepting_after_a_connection_closed_before_its_handshake_on_2_0(
    gearmand_factory: MakeGearmand, pki: Pki, gearmand_version: Version
) -> None:
    """gearmand 2.0.0 with ``--ssl --threads=0``: a TLS client is served; then a connection opened and closed
    without a handshake (a port probe, a load balancer's health check) makes it stop accepting for good, and it
    ignores SIGTERM.  Why gearworker's docs say ``--threads=2`` or more with ``--ssl``.  1.1 (plaintext) still
    answers after such a connection."""
    g = gearmand_factory(threads=0, extra=_ssl_args(pki))
    try:
        if gearmand_version.at_least(2):
            assert _handshake(g.port, pki.ca, timeout=5).startswith("TLSv1")
        socket.create_connection(("127.0.0.1", g.port), timeout=5).close()
        time.sleep(0.5)
        if gearmand_version.at_least(2):
            assert _handshake(g.port, pki.ca, timeout=3) == "timed out"
            assert g.proc is not None
            g.proc.terminate()
            with pytest.raises(subprocess.TimeoutExpired):
                g.proc.wait(2)
        else:
            assert g.admin("version").startswith("OK")
    finally:
        g.kill()  # SIGKILL: 2.0.0 in that state ignores SIGTERM
