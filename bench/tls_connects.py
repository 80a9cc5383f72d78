"""Connections that come and go on a gearmand serving TLS itself (``--ssl``): how many fail.

    .venv/bin/python -m bench.tls_connects                         # scripts/gearmand 2.0.0, 40 connections
    .venv/bin/python -m bench.tls_connects --gearmand 1.1.21 --connections 200

gearmand's own TLS loses connections: a TLS connection that closes takes
another of the same I/O thread with it (tests/network/test_tls_native.py), so
clients that come and go break each other and the workers' connections
(connections that open at the same time and stay open are all served).  For each
``--threads`` value this opens ``--connections`` connections, one at a time
and then ``--parallel`` at a time, each sending an ``ECHO_REQ`` and reading
the answer; plaintext on the same gearmand build is the control.  Then the
same through gearworker's ``Client`` (a new client per job, ``--parallel``
at a time, a worker serving ``reverse``).  Needs ``openssl`` for the
throw-away certificates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .procs import ROOT

sys.path.insert(0, str(ROOT / "tests" / "network"))
import gearmand as gearmands
from netlab import make_pki

from gearworker import Client

WORKER_TLS = {"GEARWORKER_TLS": "true", "GEARWORKER_TLS_SERVER_HOSTNAME": "localhost", "GEARWORKER_LOG_LEVEL": "error"}


def echo(port: int, ctx: ssl.SSLContext | None) -> str:
    """One connection: an ECHO_REQ and its answer; "ok" or what went wrong."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            sock = ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw
            sock.sendall(b"\0REQ" + struct.pack(">II", 16, 5) + b"hello")
            data = b""
            while len(data) < 17:
                chunk = sock.recv(100)
                if not chunk:
                    break
                data += chunk
            return "ok" if data[12:] == b"hello" else f"closed after {len(data)} bytes"
    except (ssl.SSLError, OSError) as e:
        return f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"


def count(port: int, ctx: ssl.SSLContext | None, n: int, parallel: int) -> tuple[int, set[str]]:
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda _: echo(port, ctx), range(n)))
    return sum(r == "ok" for r in results), {r for r in results if r != "ok"}


async def through_client(address: str, ctx: ssl.SSLContext, n: int, parallel: int) -> tuple[int, set[str]]:
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> str:
        async with gate:
            try:
                async with Client([address], tls=ctx, reconnect_min=0.05) as c:
                    out = await c.submit("reverse", b"abc%d" % i, timeout=20)
                return "ok" if out == (b"abc%d" % i)[::-1] else f"wrong answer {out!r}"
            except Exception as e:
                return f"{type(e).__name__}: {e}"

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(r == "ok" for r in results), {r.split(" (next try")[0] for r in results if r != "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gearmand", default="2.0.0", help="a version for scripts/gearmand, or a path")
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, action="append", help="gearmand --threads (repeatable)")
    args = parser.parse_args()
    binary = gearmands.use(args.gearmand)
    if not binary.tls:
        sys.exit(f"{binary.describe()}: built without TLS, nothing to measure")
    pki = make_pki(Path(tempfile.mkdtemp(prefix="bench-tls-")))
    tls_args = [
        "--ssl",
        f"--ssl-ca-file={pki.ca}",
        f"--ssl-certificate={pki.server_cert}",
        f"--ssl-key={pki.server_key}",
    ]
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    n, p = args.connections, args.parallel
    print(f"{binary.describe()}; {n} connections per row, ECHO_REQ on each\n")
    print(
        f"| --threads | plaintext, {p} at a time | TLS, 1 at a time | TLS, {p} at a time "
        f"| gearworker Client over TLS, {p} at a time |"
    )
    print("|---|---|---|---|---|")
    seen: set[str] = set()
    for threads in args.threads or [0, 1, 2, 4]:
        plain = gearmands.Gearmand(threads=threads).start()
        tls = gearmands.Gearmand(threads=threads, extra=tls_args).start()
        worker = subprocess.Popen(
            [sys.executable, "-m", "gearworker", "run", "--server", tls.address, "--processes", "1"],
            env={**os.environ, **WORKER_TLS, "GEARWORKER_TLS_CA_FILE": str(pki.ca)},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            rows = [count(plain.port, None, n, p), count(tls.port, ctx, n, 1), count(tls.port, ctx, n, p)]
            rows.append(asyncio.run(through_client(tls.address, ctx, n, p)))
            for _, errors in rows:
                seen |= errors
            print(f"| {threads} | " + " | ".join(f"{ok}/{n} ok" for ok, _ in rows) + " |")
        finally:
            worker.kill()
            worker.wait()
            plain.kill()
            tls.kill()
    if seen:
        print("\nfailures seen:\n" + "\n".join(f"- {e}" for e in sorted(seen)))


if __name__ == "__main__":
    main()
