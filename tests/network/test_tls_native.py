"""TLS served by gearmand itself (``--ssl``), without stunnel.

Whether gearmand serves TLS depends on how it was built, not on its version: Debian's 1.1.20 is built
without TLS and serves plaintext whatever the flags; 1.1.21 and 2.0.0 built by ``scripts/gearmand``
(``--enable-ssl``) serve TLS and behave alike.  Each test expects each build's behaviour (the
``gearmand_tls`` fixture); stunnel in front of gearmand is test_tls.py's.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from gearmand import Gearmand
from netlab import HERE, Pki, make_pki
from support import MakeGearmand, WorkerProcess, wait_until

from gearworker import Client
from gearworker.errors import NoServerAvailable
from gearworker.protocol import PacketType, encode_request


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


def _tls_failure(tls: bool) -> str:
    """What gearworker says when it cannot make TLS with a gearmand: the certificate check (built with TLS) or
    the server dropping the connection in the handshake (built without: it read the ClientHello as a bad packet)."""
    if tls:
        return "CERTIFICATE_VERIFY_FAILED"
    return "the server closed the connection during the TLS handshake"


async def _workers_of(g: Gearmand, pki: Pki, function: str) -> int:
    """Workers gearmand lists for ``function``, asked over TLS (a ``--ssl`` gearmand speaks nothing else)."""
    async with Client([g.address], tls=_context(pki.ca)) as c:
        status = await c.server_status()
    return sum(row.workers for row in status[g.address] if row.function == function)


async def test_native_tls_runs_a_job_when_built_with_tls_and_fails_clearly_when_not(
    tls_gearmand: Gearmand, pki: Pki, gearmand_tls: bool, tmp_path: Path
) -> None:
    """Worker and client with the right CA (settings tls, tls_ca_file, tls_server_hostname; Client(tls=...)).

    Built with TLS: a job runs end to end, and a client presenting a certificate from an unrelated CA runs one
    too: gearmand (1.1.21 and 2.0.0) neither asks for nor checks client certificates (mutual TLS needs stunnel).
    Built without (Debian's): the client raises NoServerAvailable naming the server and TLS, the worker logs
    the same and never registers: no plaintext fallback."""
    g = tls_gearmand
    worker = _tls_worker(g, pki.ca)
    try:
        if gearmand_tls:
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
            assert f"TLS with job server {g.address} failed" in message and _tls_failure(gearmand_tls) in message
            wait_until(
                lambda: f"TLS with job server {g.address} failed" in worker.log_text(),
                20,
                what="the worker to log the TLS failure",
                process=worker,
            )
            assert g.status().get("net_echo", (0, 0, 0))[2] == 0, "nothing reached gearmand in plaintext"
    finally:
        worker.stop(timeout=5)


@pytest.mark.parametrize("wrong", ["ca", "host-name"])
async def test_native_tls_with_a_wrong_ca_or_host_name_fails_clearly_and_never_falls_back_to_plaintext(
    tls_gearmand: Gearmand, pki: Pki, gearmand_tls: bool, wrong: str
) -> None:
    """A worker and a client checking the server certificate against another CA, or against the host name
    ``wrong.example``: the client raises NoServerAvailable naming the server and the TLS cause
    (CERTIFICATE_VERIFY_FAILED when gearmand serves TLS), the worker logs it and keeps retrying, and gearmand
    lists no worker.  Built with TLS (--threads=2), gearmand still serves a good client after those failed
    handshakes."""
    g = tls_gearmand
    ca, hostname = (pki.other_ca, "localhost") if wrong == "ca" else (pki.ca, "wrong.example")
    expected = _tls_failure(gearmand_tls)
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
        if gearmand_tls:
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


def test_native_tls_with_threads_0_stops_accepting_after_a_connection_closed_before_its_handshake(
    gearmand_factory: MakeGearmand, pki: Pki, gearmand_tls: bool
) -> None:
    """gearmand built with TLS (1.1.21 and 2.0.0 alike), ``--ssl --threads=0``: a TLS client is served; then a
    connection opened and closed without a handshake (a port probe, a load balancer's health check) makes it
    stop accepting for good, and it ignores SIGTERM.  Why gearworker's docs say ``--threads=2`` or more with
    ``--ssl``.  Built without TLS (plaintext), it still answers after such a connection."""
    g = gearmand_factory(threads=0, extra=_ssl_args(pki))
    try:
        if gearmand_tls:
            assert _handshake(g.port, pki.ca, timeout=5).startswith("TLSv1")
        socket.create_connection(("127.0.0.1", g.port), timeout=5).close()
        time.sleep(0.5)
        if gearmand_tls:
            assert _handshake(g.port, pki.ca, timeout=3) == "timed out"
            assert g.proc is not None
            g.proc.terminate()
            with pytest.raises(subprocess.TimeoutExpired):
                g.proc.wait(2)
        else:
            assert g.admin("version").startswith("OK")
    finally:
        g.kill()  # SIGKILL: gearmand in that state ignores SIGTERM


def _connect(port: int, ca: Path | None) -> socket.socket:
    """A connection to 127.0.0.1:port, over TLS when ``ca`` is given."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return _context(ca).wrap_socket(raw, server_hostname="localhost") if ca is not None else raw


def _echo(sock: socket.socket, payload: bytes = b"still here") -> None:
    """An ECHO_REQ and its ECHO_RES; ConnectionError when the server closed the connection instead."""
    sock.sendall(encode_request(PacketType.ECHO_REQ, payload))
    answer = b""
    while len(answer) < 12 + len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        answer += chunk
    assert answer[12:] == payload


def test_native_tls_a_connection_that_closes_takes_another_on_the_same_io_thread_with_it(
    gearmand_factory: MakeGearmand, pki: Pki, gearmand_tls: bool
) -> None:
    """gearmand built with TLS (1.1.21 and 2.0.0 alike): when a TLS connection closes, gearmand also closes
    another TLS connection of the same I/O thread.  With ``--threads=0`` (one thread) every time: each client
    that disconnects drops a worker's connection, and the jobs it held go back to the queue.  Why the docs say
    stunnel, not ``--ssl``.  Built without TLS (plaintext whatever the flags), the held connection stays."""
    g = gearmand_factory(threads=0, extra=_ssl_args(pki))
    ca = pki.ca if gearmand_tls else None
    with _connect(g.port, ca) as held:
        _echo(held)
        with _connect(g.port, ca) as passing:
            _echo(passing)
        time.sleep(0.3)
        if gearmand_tls:
            with pytest.raises((ConnectionError, ssl.SSLError)):
                _echo(held)
        else:
            _echo(held)
