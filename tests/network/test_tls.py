"""TLS to job servers, through stunnel4 in front of gearmand (Debian's gearmand serves plaintext even with
--ssl: it is built without SSL)."""

from __future__ import annotations

import ssl

import pytest
from gearmand import Gearmand
from netlab import HERE, MakeStunnel, Pki
from support import WorkerProcess, wait_until

from gearworker import Client
from gearworker.errors import GearworkerError


def _worker_env(pki: Pki, *, ca: str, client_cert: bool) -> dict[str, str]:
    env = {"GEARWORKER_TLS": "true", "GEARWORKER_TLS_CA_FILE": ca, "GEARWORKER_TLS_SERVER_HOSTNAME": "localhost"}
    if client_cert:
        env |= {"GEARWORKER_TLS_CERT_FILE": str(pki.client_cert), "GEARWORKER_TLS_KEY_FILE": str(pki.client_key)}
    return env


def _context(pki: Pki, *, ca: str, client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if client_cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


@pytest.mark.parametrize("client_cert", [False, True], ids=["server-cert-only", "client-cert-required"])
async def test_worker_and_client_over_tls(
    gearmand: Gearmand, pki: Pki, stunnel_factory: MakeStunnel, client_cert: bool
) -> None:
    """Worker (settings tls, tls_ca_file, optional tls_cert_file/tls_key_file, tls_server_hostname) and client
    (tls=SSLContext) reach gearmand only through TLS and a job runs end to end."""
    tunnel = stunnel_factory(pki=pki, target_port=gearmand.port, require_client_cert=client_cert)
    worker = WorkerProcess(
        [tunnel.address], handlers=HERE / "handlers", env=_worker_env(pki, ca=str(pki.ca), client_cert=client_cert)
    )
    try:
        worker.start(wait_for="net_echo", gearmand=gearmand)
        async with Client([tunnel.address], tls=_context(pki, ca=str(pki.ca), client_cert=client_cert)) as c:
            assert await c.submit("net_echo", b"over tls", timeout=20) == b"over tls"
    finally:
        worker.stop(timeout=5)


def _tls_verify_failed(text: str) -> bool:
    """OpenSSL's reason, as its code (CERTIFICATE_VERIFY_FAILED) or in words (certificate verify failed)."""
    return "certificate_verify_failed" in text.lower().replace(" ", "_")


def _connections(gearmand: Gearmand) -> int:
    """Connections gearmand has, besides the admin one asking."""
    return len([line for line in gearmand.admin("workers").splitlines() if line != "."]) - 1


async def test_wrong_ca_fails_clearly_and_never_falls_back_to_plaintext(
    gearmand: Gearmand, pki: Pki, stunnel_factory: MakeStunnel
) -> None:
    """A server certificate not signed by the configured CA: the worker logs an error naming the server and the
    TLS cause and never reaches gearmand (no plaintext fallback); the client's submit raises a GearworkerError
    naming both."""
    tunnel = stunnel_factory(pki=pki, target_port=gearmand.port)
    worker = WorkerProcess(
        [tunnel.address], handlers=HERE / "handlers", env=_worker_env(pki, ca=str(pki.other_ca), client_cert=False)
    )
    try:
        worker.start()
        wait_until(
            lambda: _tls_verify_failed(worker.log_text()),
            20,
            what="a TLS error logged",
            interval=0.1,
            detail=lambda: worker.log_text()[-2000:],
        )
        lines = [line for line in worker.log_text().splitlines() if _tls_verify_failed(line)]
        assert any(tunnel.address in line for line in lines), lines
        assert _connections(gearmand) == 0, "nothing may reach gearmand without TLS"
        assert worker.proc is not None and worker.proc.poll() is None, "it keeps retrying, like any down server"
    finally:
        worker.stop(timeout=5)

    async with Client([tunnel.address], tls=_context(pki, ca=str(pki.other_ca), client_cert=False)) as c:
        with pytest.raises(GearworkerError) as caught:
            await c.submit("net_echo", b"x", timeout=20)
    message = str(caught.value) + str(caught.value.__cause__ or "")
    assert tunnel.address in message and _tls_verify_failed(message), message
    assert _connections(gearmand) == 0
