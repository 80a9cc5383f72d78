"""System calls per job: ``strace -c -f`` attached to the worker while a fixed number of jobs runs.

    .venv/bin/python -m bench.syscalls                         # lone jobs, gearworker at defaults and PHP
    .venv/bin/python -m bench.syscalls --load flood --jobs 20000
    .venv/bin/python -m bench.syscalls --kind gearworker       # the tuned worker (no per-job log line)
    .venv/bin/python -m bench.syscalls --gap-us 1000 --jobs 1000   # lone jobs 1 ms apart (timers show)

``lone``: one no-op job at a time (``bench/php/latency.php``), the latency
path.  ``flood``: 100-byte echo jobs, 500 in flight (``bench/php/load.php``;
the count is what the client reports).  strace slows the traced process a
lot, so only the counts mean anything, never the times.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time

from .procs import php, running

_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def count(kind: str, load: str, jobs: int, gap_us: int = 0) -> tuple[int, dict[str, int]]:
    """(jobs run, {system call: count}) for one traced run."""
    function = "noop" if load == "lone" else "echo"
    with running(kind, 1, function=function) as (gearmands, procs):
        address = gearmands[0].address
        # Warm up untraced: connections, imports, caches.
        if load == "lone":
            php("latency.php", address, function, 200, 0)
        else:
            php("load.php", address, function, 100, 500, 0.5)
        trace = subprocess.Popen(
            ["strace", "-c", "-f", "-p", str(procs[0].pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # strace attaches to every thread
        if load == "lone":
            php("latency.php", address, function, jobs, 0, gap_us, timeout=600)
            done = jobs
        else:
            done = int(php("load.php", address, function, 100, 500, jobs / 10_000)["jobs"])
        time.sleep(0.3)
        trace.send_signal(2)  # SIGINT: strace detaches and prints its table
        _, err = trace.communicate(timeout=30)
    calls: dict[str, int] = {}
    for line in err.splitlines():
        m = _ROW.match(line)
        if m and m.group(3) != "total":
            calls[m.group(3)] = int(m.group(1))
    return done, calls


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.syscalls", description=__doc__.split("\n")[0])
    p.add_argument("--load", choices=["lone", "flood"], default="lone")
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--kind", action="append", help="worker kinds (default: gearworker-defaults and php)")
    p.add_argument("--gap-us", type=int, default=0, help="lone: pause before each job (0: back to back)")
    args = p.parse_args()
    for kind in args.kind or ["gearworker-defaults", "php"]:
        done, calls = count(kind, args.load, args.jobs, args.gap_us)
        total = sum(calls.values())
        top = ", ".join(f"{name} {n / done:.2f}" for name, n in sorted(calls.items(), key=lambda kv: -kv[1])[:6])
        print(f"{kind}, {args.load}: {total / done:.2f} system calls per job over {done:,} jobs ({top})")


if __name__ == "__main__":
    main()
