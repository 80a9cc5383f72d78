"""How long gearmand keeps the job of a worker that vanished, per setting: the figures of docs/reliability.md.

    .venv/bin/python -m bench.vanished_worker                      # the local gearmand's flags, idle and NOOP cases
    .venv/bin/python -m bench.vanished_worker --retries2 5 --retries2 8
    .venv/bin/python -m bench.vanished_worker --retries2 15 --bound 1200   # the kernel's default: ~16 minutes
    .venv/bin/python -m bench.vanished_worker --plain --bound 60          # gearmand without keepalive flags

Needs root (a network namespace and iptables, as tests/network does).  In a
fresh namespace: a gearmand (the one ``gearworker run`` starts, or with
``--plain`` Debian's defaults), a worker that takes a long job, a second
worker that would answer it at once.  The first worker then vanishes: its
connections' packets are dropped both ways for good and the process is
stopped (a live one would reconnect and could take the job back).  Printed:
seconds from the cut until the waiting client had its result, i.e. until
gearmand gave the job to the other worker.

"idle": nothing else happens, so gearmand's keepalive probes the dead
connection.  "noop": a new job arrives 1 s after the cut, gearmand wakes the
sleeping dead worker with a NOOP that is never acknowledged, and from then on
only the kernel's retransmission limit (``net.ipv4.tcp_retries2``, set in the
namespace) ends the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "network"))

from gearmand import free_port  # noqa: E402
from netlab import Lab, Netns, check_tools, wait_until  # noqa: E402

from gearworker import Client  # noqa: E402
from gearworker.errors import JobTimeout  # noqa: E402


def _status(lab: Lab, port: int, function: str) -> tuple[int, int, int]:
    def ask() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"status\n")
            data = b""
            while not (data == b".\n" or data.endswith(b"\n.\n")):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data.decode()

    try:
        answer = lab.netns.call(ask)
    except OSError:
        return 0, 0, 0
    for line in answer.splitlines():
        name, _, rest = line.partition("\t")
        if name == function:
            queued, running, workers = (int(x) for x in rest.split("\t"))
            return queued, running, workers
    return 0, 0, 0


def one(case: str, *, retries2: int | None, plain: bool, bound: float) -> float | None:
    """Seconds from the cut to the client's result; None when it did not come within ``bound``."""
    with tempfile.TemporaryDirectory(prefix="gw-vanish-") as tmp:
        lab = Lab(Netns(), Path(tmp))
        try:
            if retries2 is not None:
                lab.netns.exec("sysctl", "-q", "-w", f"net.ipv4.tcp_retries2={retries2}")
            if plain:
                g = lab.gearmand()
                port, servers = g.port, [g.address]
                vanishing = lab.worker(servers).start()
            else:  # no server configured: the worker starts its local gearmand, with its keepalive flags
                port = free_port()
                servers = [f"127.0.0.1:{port}"]
                vanishing = lab.worker([], env={"GEARWORKER_LOCAL_GEARMAND_PORT": str(port)}).start()
            wait_until(lambda: _status(lab, port, "net_hold")[2] == 1, timeout=30, what="the first worker")

            async def scenario() -> float | None:
                async with Client([f"127.0.0.1:{port}"]) as client:
                    job = asyncio.create_task(client.submit("net_hold", b"100000", unique="held", timeout=bound))
                    while _status(lab, port, "net_hold")[1] != 1:
                        await asyncio.sleep(0.05)
                    lab.worker(servers, env={"NET_FAST": "1"}).start()
                    while _status(lab, port, "net_hold")[2] != 2:
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(1.5)  # both asleep
                    lab.netns.drop_connections_of(vanishing.pid, port)
                    vanishing.signal(signal.SIGSTOP)
                    cut = time.monotonic()
                    try:
                        if case == "noop":
                            await asyncio.sleep(1.0)
                            await client.submit("net_hold", b"1", unique="wakes-the-dead-one", timeout=30)
                        await job
                    except JobTimeout:
                        return None
                    finally:
                        vanishing.signal(signal.SIGCONT)
                    return time.monotonic() - cut

            return lab.netns.run_async(scenario)
        finally:
            lab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=["idle", "noop"], help="default: both")
    parser.add_argument("--retries2", action="append", type=int, help="net.ipv4.tcp_retries2 in the namespace")
    parser.add_argument("--plain", action="store_true", help="gearmand without keepalive flags")
    parser.add_argument("--bound", type=float, default=180.0, help="seconds the client waits at most")
    args = parser.parse_args()
    missing = check_tools()
    if missing:
        sys.exit(f"needs: {', '.join(missing)}")
    gearmand = "gearmand without keepalive flags" if args.plain else "the local gearmand (--keepalive 5/2/3)"
    for case in args.case or ["idle", "noop"]:
        for retries2 in args.retries2 or [None]:
            took = one(case, retries2=retries2, plain=args.plain, bound=args.bound)
            setting = "kernel default" if retries2 is None else str(retries2)
            result = f"{took:.1f} s" if took is not None else f"not within {args.bound:g} s"
            print(f"{gearmand}, {case}, tcp_retries2 {setting}: the job went to another worker after {result}")


if __name__ == "__main__":
    main()
