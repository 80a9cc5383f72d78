"""Start and stop real gearmand processes for tests and benchmarks, of the version asked for.

Which gearmand: ``pytest --gearmand=VERSION|PATH``, else ``$GEARWORKER_TEST_GEARMAND`` (same values),
else Debian's (the first ``gearmand`` on PATH, else /usr/sbin/gearmand).  A VERSION is resolved by
``scripts/gearmand VERSION`` (Debian's binary when it is that version, else one built once into a
cache).  conftest.py calls :func:`use`; :func:`binary` is the one in use and the version it reports.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "GEARWORKER_TEST_GEARMAND"
DEBIAN_GEARMAND = "/usr/sbin/gearmand"
_VERSION_SPEC = re.compile(r"[0-9][0-9A-Za-z._-]*")  # what scripts/gearmand accepts


class UnknownVersion(Exception):
    """The gearmand in use reports no version, and none was asked for."""


def release_of(text: str) -> tuple[int, ...] | None:
    """``"1.1.20+ds"`` -> (1, 1, 20); None when ``text`` does not start with a number (``""``: unknown)."""
    match = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(part) for part in match.group().split(".")) if match else None


@dataclass(frozen=True)
class Version:
    """A gearmand's version: what the server says (``1.1.20+ds``, ``2.0.0``), else what was asked for.

    gearmand 2.0.0 built from the tag's archive as it comes says nothing (``gearmand --version`` and
    the admin ``version`` answer are empty: its version comes from ``git describe``); such a server's
    version is the one asked for with ``--gearmand=VERSION``, or unknown.
    """

    reported: str
    asked: str | None = None

    @property
    def text(self) -> str:
        return self.reported or self.asked or ""

    @property
    def release(self) -> tuple[int, ...] | None:
        """(1, 1, 20), (2, 0, 0)...; None when unknown."""
        return release_of(self.text)

    def at_least(self, *release: int) -> bool:
        """Is it ``release`` or later?  Raises :class:`UnknownVersion` rather than guess."""
        known = self.release
        if known is None:
            raise UnknownVersion("this gearmand reports no version and none was asked for (--gearmand=VERSION)")
        return known >= release

    def __str__(self) -> str:
        if self.reported:
            return self.reported
        if self.asked:
            return f"{self.asked} (asked for; the binary reports no version)"
        return "unknown (the binary reports no version)"


@dataclass(frozen=True)
class Binary:
    """A gearmand executable, the version it reports, and what the run asked for (None: the default)."""

    path: str
    version: Version
    spec: str | None = None
    #: Built with TLS (see :func:`built_with_tls`): what ``--ssl`` does depends on the build, not the version.
    tls: bool = False

    def describe(self) -> str:
        asked = f" (asked for: {self.spec})" if self.spec else " (the default: Debian's)"
        return f"gearmand {self.version} at {self.path}{asked}, {'with' if self.tls else 'without'} TLS"


def built_with_tls(path: str) -> bool:
    """Does this gearmand serve TLS with ``--ssl``?  Any version may be built either way: Debian's 1.1.20 is
    built without (gearmand #207: it accepts ``--ssl``, logs "SSL: true" and serves plaintext) and imports
    nothing from OpenSSL; 1.1.21 and 2.0.0 built by ``scripts/gearmand`` (``--enable-ssl``) import
    ``SSL_accept``, whose name is then in the binary's dynamic symbol table."""
    with open(path, "rb") as f:
        return b"SSL_accept\x00" in f.read()


def reported_version(path: str) -> str:
    """The version ``gearmand --version`` prints (``gearmand 1.1.20+ds - https://...``); "" when it prints none."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    for line in out.splitlines():
        if line.startswith("gearmand"):
            return line.removeprefix("gearmand").split(" - ", 1)[0].strip()
    return ""


def resolve(spec: str | None) -> Binary:
    """The gearmand ``spec`` names: None or "" for Debian's, a VERSION (``2.0.0``), or a PATH (has a ``/``)."""
    asked = None
    if not spec:
        path = shutil.which("gearmand") or DEBIAN_GEARMAND
        if not os.path.exists(path):
            raise RuntimeError("gearmand is not installed: apt-get install gearman-job-server gearman-tools")
    elif "/" in spec:
        path = os.path.abspath(spec)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"--gearmand={spec}: not an executable file")
    elif _VERSION_SPEC.fullmatch(spec):
        asked = spec
        # A build takes minutes the first time: its progress lines go to stderr, as they come.
        done = subprocess.run(
            [str(ROOT / "scripts" / "gearmand"), spec], stdout=subprocess.PIPE, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/gearmand {spec} failed (exit {done.returncode}); its reason is above")
        path = done.stdout.strip()
    else:
        raise RuntimeError(f"--gearmand={spec}: neither a version (like 2.0.0) nor a path (with a '/')")
    return Binary(path, Version(reported_version(path), asked), spec or None, built_with_tls(path))


_current: Binary | None = None


def use(spec: str | None, *, shim_dir: Path | None = None) -> Binary:
    """Make ``spec``'s gearmand the one :class:`Gearmand` starts.

    With ``shim_dir``, also put a ``gearmand`` link to it first on PATH, so code that looks gearmand
    up on PATH (gearworker's local gearmand, ``app/localserver.py``) runs the same one.
    """
    global _current
    _current = resolve(spec)
    if shim_dir is not None:
        shim_dir.mkdir(parents=True, exist_ok=True)
        link = shim_dir / "gearmand"
        link.unlink(missing_ok=True)
        link.symlink_to(_current.path)
        os.environ["PATH"] = f"{shim_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return _current


def binary() -> Binary:
    """The gearmand in use: the one :func:`use` chose, else Debian's."""
    global _current
    if _current is None:
        _current = resolve(None)
    return _current


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def listens(pid: int, port: int) -> bool:
    """Does process ``pid`` hold a socket listening on TCP ``port`` (in its own network namespace)?

    Read from /proc, without connecting: gearmand 2.0.0 with ``--ssl --threads=0`` stops accepting
    after a connection that closes without a TLS handshake, which is what a connect-and-close probe is.
    """
    try:
        inodes = {
            target[len("socket:[") : -1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if (target := _readlink(f"/proc/{pid}/fd/{fd}")).startswith("socket:[")
        }
        tables = [Path(f"/proc/{pid}/net/{name}").read_text() for name in ("tcp", "tcp6")]
    except OSError:  # it exited
        return False
    for table in tables:
        for line in table.splitlines()[1:]:
            cols = line.split()
            # sl local_address rem_address st ... inode: state 0A is LISTEN
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                return True
    return False


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def wait_listening(proc: subprocess.Popen[bytes], port: int, *, timeout: float = 10.0) -> None:
    """Wait until ``proc`` listens on ``port``: RuntimeError at once if it exits, TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not listens(proc.pid, port):
        if proc.poll() is not None:
            raise RuntimeError(f"gearmand exited with code {proc.returncode} before listening on port {port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gearmand did not listen on port {port} within {timeout:g} s")
        time.sleep(0.02)


@dataclass
class Gearmand:
    """One gearmand on loopback; ``restart()`` keeps its port (and sqlite queue).

    ``threads=0`` (one thread for everything) by default: the fastest on two cores.  gearmand 2.0.0
    with ``--threads=0`` does not write the NOOP its epoch-job timer queues, and with ``--ssl``
    stops accepting after one failed handshake: tests of those give ``threads`` (docs/gearmand.md).
    """

    port: int = field(default_factory=free_port)
    threads: int = 0
    sqlite: Path | None = None
    extra: list[str] = field(default_factory=list)
    binary: Binary = field(default_factory=binary)
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="gearmand-", suffix=".log")[1]))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, listen: str = "127.0.0.1") -> list[str]:
        cmd = [
            self.binary.path,
            f"--listen={listen}",
            f"--port={self.port}",
            f"--threads={self.threads}",
            f"--log-file={self.log}",
            "--verbose=WARNING",
            *self.extra,
        ]
        if self.sqlite is not None:
            cmd += ["--queue-type=libsqlite3", f"--libsqlite3-db={self.sqlite}"]
        return cmd

    def start(self) -> Gearmand:
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        try:
            wait_listening(self.proc, self.port)
        except (TimeoutError, RuntimeError) as e:
            self.stop()
            raise RuntimeError(f"{self.binary.path}: {e}; log: {self.log.read_text()[-2000:]}") from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Send one text admin command and return the raw answer (plaintext: not to a ``--ssl`` gearmand)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(command.encode() + b"\n")
            data = b""
            multi = command.split()[0] in ("status", "workers") or command.startswith("show")
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                done = data == b".\n" or data.endswith(b"\n.\n") if multi else data.endswith(b"\n")
                if done:
                    break
            return data.decode()

    def version(self) -> Version:
        """The running server's version: its admin ``version`` answer (``OK 2.0.0``), else the one asked for."""
        answer = self.admin("version")
        return Version(answer.removeprefix("OK").strip(), self.binary.version.asked)

    def status(self) -> dict[str, tuple[int, int, int]]:
        """``status`` as {function: (queued, running, workers)}."""
        rows = {}
        for line in self.admin("status").splitlines():
            if line == ".":
                break
            name, q, r, w = line.rsplit("\t", 3)
            rows[name] = (int(q), int(r), int(w))
        return rows


@contextlib.contextmanager
def running_gearmand(**kwargs: Any) -> Iterator[Gearmand]:
    g = Gearmand(**kwargs).start()
    try:
        yield g
    finally:
        g.stop()
