"""The fault-making tools themselves: if these fail, the network tests prove nothing."""

from __future__ import annotations

import socket
import ssl

import pytest
from gearmand import Gearmand
from netlab import DelayProxy, Lab, MakeStunnel, Pki


def _roundtrip(port: int, data: bytes = b"version\n") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(data)
        return s.recv(100)


def test_namespace_is_isolated_and_deleted(lab: Lab) -> None:
    """A gearmand in the namespace answers there and is not reachable from the host's loopback."""
    g = lab.gearmand()
    assert lab.netns.call(_roundtrip, g.port).startswith(b"OK")
    with pytest.raises(OSError):
        _roundtrip(g.port)
    name = lab.netns.name
    lab.netns.delete()
    assert name not in _list_netns()


def _list_netns() -> str:
    import subprocess

    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_dropped_connection_stays_established_while_new_ones_work(lab: Lab) -> None:
    """After drop(), the old connection's packets vanish (no answer, no reset); other connections still work."""
    g = lab.gearmand()

    def scenario() -> tuple[bytes | None, bytes]:
        old = socket.create_connection(("127.0.0.1", g.port), timeout=1)
        old.sendall(b"version\n")
        old.recv(100)
        lab.netns.drop(old.getsockname()[1], g.port)
        old.sendall(b"version\n")
        try:
            answer: bytes | None = old.recv(100)
        except TimeoutError:
            answer = None
        fresh = _roundtrip(g.port)
        old.close()
        return answer, fresh

    answer, fresh = lab.netns.call(scenario)
    assert answer is None
    assert fresh.startswith(b"OK")
    assert lab.netns.dropped_packets() >= 1


def test_gearmand_kill9_and_restart_on_the_same_address(lab: Lab) -> None:
    """kill -9 then start again: a new process on the same port answers."""
    g = lab.gearmand()
    first = g.proc.pid if g.proc else 0
    g.kill()
    g.start()
    assert g.proc is not None and g.proc.pid != first
    assert g.status() == {}


def test_delay_proxy_forwards_both_ways(gearmand: Gearmand) -> None:
    """Bytes go through the proxy unchanged, in order, both ways."""
    proxy = DelayProxy(gearmand.address, 5).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=3) as s:
            s.sendall(b"version\n" * 3)
            data = b""
            while data.count(b"\n") < 3:
                data += s.recv(100)
        assert data.startswith(b"OK ") and data.count(b"OK ") == 3
    finally:
        proxy.stop()


@pytest.mark.parametrize("client_cert", [False, True], ids=["server-cert-only", "client-cert-required"])
def test_stunnel_terminates_tls_for_gearmand(
    gearmand: Gearmand, pki: Pki, stunnel_factory: MakeStunnel, client_cert: bool
) -> None:
    """TLS with the test CA reaches gearmand through stunnel; with client certs required, one is needed."""
    tunnel = stunnel_factory(pki=pki, target_port=gearmand.port, require_client_cert=client_cert)
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    with (
        socket.create_connection(("127.0.0.1", tunnel.port), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        s.sendall(b"version\n")
        assert s.recv(100).startswith(b"OK")
    if client_cert:
        bare = ssl.create_default_context(cafile=str(pki.ca))
        with (
            pytest.raises((ssl.SSLError, ConnectionError)),
            socket.create_connection(("127.0.0.1", tunnel.port), timeout=3) as raw,
            bare.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            s.sendall(b"version\n")
            if not s.recv(100):
                raise ConnectionResetError("closed without a client certificate")


def test_partition_cuts_127_0_0_1_only(lab: Lab) -> None:
    """partition() cuts the workers' address both ways; clients on 127.0.0.2 still reach gearmand; heal() lifts it."""
    g = lab.gearmand()
    lab.netns.partition(g.port)

    def probe() -> tuple[bool, bytes]:
        try:
            _roundtrip(g.port)
            cut = False
        except OSError:
            cut = True
        with socket.create_connection(("127.0.0.2", g.port), timeout=2) as s:
            s.sendall(b"version\n")
            return cut, s.recv(100)

    cut, answer = lab.netns.call(probe)
    assert cut and answer.startswith(b"OK")
    lab.netns.heal()
    assert lab.netns.call(_roundtrip, g.port).startswith(b"OK")
