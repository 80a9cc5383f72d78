"""Network faults made for real: namespaces, iptables, kill -9, a delay proxy, stunnel.

Everything a test starts lives in its own network namespace (``ip netns``), so
dropping packets there touches nothing else on the machine.  A process is put
into a namespace by starting it from a thread that joined the namespace
(``setns`` is per thread, and a child inherits its parent thread's
namespaces), and a socket made in such a thread stays in the namespace: so the
test itself can run a :class:`gearworker.Client` inside one (:meth:`Netns.call`).

These helpers need root, ``ip``, ``ss``, ``iptables``, ``openssl`` and
``stunnel4``; :func:`check_tools` fails (never skips) when one is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gearmand import Gearmand, free_port, wait_for_port  # noqa: E402
from support import WorkerProcess  # noqa: E402

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_names = itertools.count()
TOOLS = ("ip", "ss", "iptables", "openssl", "stunnel4")


def check_tools() -> list[str]:
    """What is missing for the network tests (empty when all is there)."""
    missing = [t for t in TOOLS if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]
    if os.geteuid() != 0:
        missing.append("root (network namespaces and iptables need it)")
    return missing


def _run(cmd: Sequence[str], *, check: bool = True) -> str:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


class Netns:
    """One network namespace with its loopback up; :meth:`delete` removes it and kills what runs in it."""

    def __init__(self, prefix: str = "gwnet") -> None:
        self.name = f"{prefix}{os.getpid()}x{next(_names)}"
        _run(["ip", "netns", "add", self.name])
        try:
            self.exec("ip", "link", "set", "lo", "up")
        except Exception:
            self.delete()
            raise

    def delete(self) -> None:
        """Kill every process still in the namespace (all started by this test), then remove it."""
        for pid in _run(["ip", "netns", "pids", self.name], check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _run(["ip", "netns", "del", self.name], check=False)

    def exec(self, *cmd: str, check: bool = True) -> str:
        """Run a command inside the namespace and return its output."""
        return _run(["ip", "netns", "exec", self.name, *cmd], check=check)

    # -- running Python inside the namespace ---------------------------------
    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in a new thread that joined this namespace; return its result or raise its error.

        Sockets it creates, and processes it starts, belong to the namespace.
        """
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if _libc.setns(fd, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns into {self.name}: {os.strerror(err)}")
                finally:
                    os.close(fd)
                box["value"] = fn(*args, **kwargs)
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e

        thread = threading.Thread(target=body, name=f"netns {self.name}", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def run_async(self, coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """``asyncio.run(coro())`` inside the namespace (a fresh event loop in a fresh thread)."""
        import asyncio

        return self.call(lambda: asyncio.run(coro()))

    # -- faults --------------------------------------------------------------
    def connections(self, server_port: int, pid: int | None = None) -> list[int]:
        """Local ports of ESTABLISHED connections to ``:server_port`` (of process ``pid`` if given)."""
        out = self.exec("ss", "-tnpH", "state", "established", f"( dport = :{server_port} )")
        ports = []
        for line in out.splitlines():
            if pid is not None and f"pid={pid}," not in line:
                continue
            local = line.split()[2]  # Recv-Q Send-Q Local Peer [Process]
            ports.append(int(local.rsplit(":", 1)[1]))
        return sorted(ports)

    def drop(self, local_port: int, server_port: int) -> None:
        """Drop every packet of one connection, both ways, for good (until :meth:`heal`).

        Only INPUT: on loopback each packet passes it once, and a DROP in OUTPUT
        would report EPERM to the sender at once, which a real lost packet never does.
        """
        self.exec(
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--sport",
            str(server_port),
            "--dport",
            str(local_port),
            "-j",
            "DROP",
        )
        self.exec(
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--sport",
            str(local_port),
            "--dport",
            str(server_port),
            "-j",
            "DROP",
        )

    def drop_connections_of(self, pid: int, server_port: int, *, timeout: float = 10.0) -> list[int]:
        """Drop all of process ``pid``'s connections to ``server_port``; return their local ports."""
        deadline = time.monotonic() + timeout
        while not (ports := self.connections(server_port, pid)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"pid {pid} has no connection to :{server_port}")
            time.sleep(0.05)
        for port in ports:
            self.drop(port, server_port)
        return ports

    def partition(self, server_port: int, host: str = "127.0.0.1") -> None:
        """Drop all traffic to and from ``host:server_port``, existing and new connections.

        A client of :attr:`NsGearmand.client_address` talks 127.0.0.1 -> 127.0.0.2:port
        (lo's source address is 127.0.0.1), which neither rule matches: clients are not cut off.
        """
        self.exec("iptables", "-I", "INPUT", "-p", "tcp", "-d", host, "--dport", str(server_port), "-j", "DROP")
        self.exec("iptables", "-I", "INPUT", "-p", "tcp", "-s", host, "--sport", str(server_port), "-j", "DROP")

    def heal(self) -> None:
        """Remove every DROP rule: packets flow again."""
        self.exec("iptables", "-F", "INPUT")

    def forget_idle_after(self, seconds: int, server_port: int, host: str = "127.0.0.1") -> None:
        """Behave like a NAT on the way to ``host:server_port``: connections idle for ``seconds`` are forgotten and
        their later packets vanish.

        Conntrack's established timeout is the NAT table's idle timeout; with
        ``tcp_loose=0`` a mid-stream packet of a forgotten connection is INVALID
        (not picked up again), and INVALID packets of connections to
        ``host:server_port`` are dropped: clients of :attr:`NsGearmand.client_address`
        (127.0.0.2) are not behind this NAT.
        """
        self.exec("sysctl", "-q", "-w", f"net.netfilter.nf_conntrack_tcp_timeout_established={seconds}")
        self.exec("sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_loose=0")
        invalid = ["-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]
        self.exec("iptables", "-A", "INPUT", "-p", "tcp", "-d", host, "--dport", str(server_port), *invalid)
        self.exec("iptables", "-A", "INPUT", "-p", "tcp", "-s", host, "--sport", str(server_port), *invalid)

    def dropped_packets(self) -> int:
        """Packets dropped so far by this namespace's INPUT rules."""
        out = self.exec("iptables", "-L", "INPUT", "-n", "-v", "-x")
        return sum(int(line.split()[0]) for line in out.splitlines()[2:] if "DROP" in line)


@dataclass
class NsGearmand(Gearmand):
    """A gearmand on 127.0.0.1 inside a namespace; ``kill()`` + ``start()`` is a reboot on the same address."""

    netns: Netns | None = None

    def start(self) -> NsGearmand:
        """Start gearmand listening on every address of the namespace.

        Clients use 127.0.0.2 and workers 127.0.0.1, so :meth:`Netns.partition`
        can cut the workers off while clients still submit (--listen may be given once).
        """
        assert self.netns is not None
        cmd = self.command(listen="0.0.0.0")
        quiet = subprocess.DEVNULL
        self.proc = self.netns.call(lambda: subprocess.Popen(cmd, stdin=quiet, stdout=quiet, stderr=quiet))
        self._wait_ready()  # read from /proc: works across namespaces
        return self

    @property
    def client_address(self) -> str:
        """The address clients use: outside what :meth:`Netns.partition` cuts."""
        return f"127.0.0.2:{self.port}"

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Like :meth:`Gearmand.admin`, from inside the namespace, via 127.0.0.2: never cut off by the faults."""
        assert self.netns is not None
        return self.netns.call(_admin, self.port, command, timeout)


@dataclass
class NsWorker(WorkerProcess):
    """A real ``python -m gearworker`` process inside a namespace."""

    netns: Netns | None = None

    def start(
        self, *, wait_for: str | None = None, gearmand: Gearmand | None = None, timeout: float = 20.0
    ) -> NsWorker:
        assert self.netns is not None
        self.netns.call(WorkerProcess.start, self)
        if wait_for is not None and gearmand is not None:
            self.wait_registered(gearmand, wait_for, timeout=timeout)
        return self


@dataclass
class Lab:
    """One test's namespace and everything started in it; all of it is removed afterwards."""

    netns: Netns
    tmp: Path
    gearmands: list[NsGearmand] = field(default_factory=list)
    workers: list[NsWorker] = field(default_factory=list)

    @property
    def record(self) -> Path:
        """The file the ``net_*`` handlers append each run to."""
        return self.tmp / "runs.txt"

    def gearmand(self, port: int | None = None) -> NsGearmand:
        g = NsGearmand(netns=self.netns) if port is None else NsGearmand(port=port, netns=self.netns)
        self.gearmands.append(g)
        return g.start()

    def worker(self, servers: list[str], *args: str, env: dict[str, str] | None = None) -> NsWorker:
        w = NsWorker(
            servers,
            handlers=HERE / "handlers",
            args=list(args),
            netns=self.netns,
            env={"NET_RECORD": str(self.record), **(env or {})},
        )
        self.workers.append(w)
        return w

    def runs(self) -> list[str]:
        """The ids of the jobs run so far, one per run (a job run twice is listed twice)."""
        if not self.record.exists():
            return []
        return [line.split("\t")[0] for line in self.record.read_text().splitlines() if line]

    def close(self) -> None:
        for w in self.workers:
            w.stop(timeout=5)
        for g in self.gearmands:
            g.kill()  # SIGTERM waits for connections whose packets are being dropped
        self.netns.delete()


def _admin(port: int, command: str, timeout: float) -> str:
    with socket.create_connection(("127.0.0.2", port), timeout=timeout) as s:
        s.sendall(command.encode() + b"\n")
        data = b""
        multi = command.split()[0] in ("status", "workers")
        while chunk := s.recv(65536):
            data += chunk
            if (data == b".\n" or data.endswith(b"\n.\n")) if multi else data.endswith(b"\n"):
                break
        return data.decode()


# -- the delay proxy -------------------------------------------------------------


@dataclass
class DelayProxy:
    """``tests/network/delayproxy.py`` as a process: 127.0.0.1:port -> target, each way delayed ``delay_ms``."""

    target: str
    delay_ms: float
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DelayProxy:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "delayproxy.py"), str(self.port), self.target, str(self.delay_ms)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# -- TLS: a self-made CA and stunnel in front of gearmand -------------------------


@dataclass(frozen=True)
class Pki:
    """Files of a test CA, a server certificate for ``localhost``/127.0.0.1, a client certificate, another CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str) -> None:
    _run(["openssl", *args])


def make_pki(folder: Path) -> Pki:
    """Make the certificates with ``openssl`` (about 0.2 s, EC keys)."""
    folder.mkdir(parents=True, exist_ok=True)

    def ca(name: str) -> tuple[Path, Path]:
        key, cert = folder / f"{name}.key", folder / f"{name}.pem"
        # The extensions a real CA has: Python 3.13 verifies with VERIFY_X509_STRICT, which refuses a
        # CA certificate without keyUsage ("CA cert does not include key usage extension").
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN=gearworker test {name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
        )
        return cert, key

    def leaf(name: str, cn: str, ca_cert: Path, ca_key: Path, ext: str) -> tuple[Path, Path]:
        key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
        extfile = folder / f"{name}.ext"
        # Strict verification (3.13) also wants the leaf to name its issuer's key.
        extfile.write_text(ext + "\nauthorityKeyIdentifier=keyid,issuer\nkeyUsage=critical,digitalSignature\n")
        _openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            f"/CN={cn}",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_cert),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "2",
            "-extfile",
            str(extfile),
        )
        return cert, key

    ca_cert, ca_key = ca("ca")
    other_ca, _ = ca("other-ca")
    server_cert, server_key = leaf(
        "server", "localhost", ca_cert, ca_key, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
    )
    client_cert, client_key = leaf("client", "gearworker-client", ca_cert, ca_key, "extendedKeyUsage=clientAuth")
    return Pki(ca_cert, server_cert, server_key, client_cert, client_key, other_ca)


@dataclass
class Stunnel:
    """stunnel4 terminating TLS on 127.0.0.1:port and forwarding plaintext to gearmand."""

    pki: Pki
    target_port: int
    folder: Path
    require_client_cert: bool = False
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"stunnel-{self.port}.log"

    def start(self) -> Stunnel:
        lines = [
            "foreground = yes",
            f"output = {self.log}",
            "debug = 5",
            "[gearman]",
            f"accept = 127.0.0.1:{self.port}",
            f"connect = 127.0.0.1:{self.target_port}",
            f"cert = {self.pki.server_cert}",
            f"key = {self.pki.server_key}",
        ]
        if self.require_client_cert:
            lines += [f"CAfile = {self.pki.ca}", "verifyChain = yes", "requireCert = yes"]
        conf = self.folder / f"stunnel-{self.port}.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            ["stunnel4", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"stunnel4 did not start: {self.log.read_text() if self.log.exists() else ''}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


MakeStunnel = Callable[..., Stunnel]  # the stunnel_factory fixture


#: Measured figures (detection times, duplicate counts), printed at the end of the run.
FIGURES: dict[str, str] = {}


def figure(name: str, value: str) -> None:
    """Record one measured figure for the terminal summary (and print it for ``-s`` runs)."""
    FIGURES[name] = value
    print(f"{name}: {value}")
