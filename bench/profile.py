"""Profile the real worker under the tiny-job load with py-spy: where its time goes.

    .venv/bin/python -m bench.profile                 # defaults
    .venv/bin/python -m bench.profile --kind gearworker-defaults --load lone   # one job at a time

Starts gearmand and the worker, runs the PHP load client (500 in flight) and
samples the worker with ``py-spy record`` (it must be installed: the ``dev``
extra has it; sampling another process may need root or ptrace permission).
Prints the functions with the most samples, by own time and including callees.
py-spy counts wall time of a running thread, so time spent inside a system
call (a socket write) shows up on the Python line that made it.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .procs import PHP_DIR, WORKERS, running


def summarise(raw: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for name in {
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")" if " (" in f else f for f in frames
        }:
            inclusive[name] += n
    out = [f"{total} samples", "", "own time:"]
    out += [f"{n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    out += ["", "including callees (by function):"]
    out += [f"{n / total:6.1%}  {name}" for name, n in inclusive.most_common(top + 10)]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    p.add_argument("--kind", default="gearworker", choices=[k for k in WORKERS if k.startswith("gearworker")])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--load",
        choices=["flood", "lone"],
        default="flood",
        help="flood: 500 echo jobs in flight; lone: one no-op job at a time (the latency path)",
    )
    args = p.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    function = "echo" if args.load == "flood" else "noop"
    with tempfile.TemporaryDirectory() as tmp, running(args.kind, function=function) as (gearmands, procs):
        raw = Path(tmp) / "raw.txt"
        if args.load == "flood":
            cmd = ["load.php", gearmands[0].address, "echo", "100", "500", str(args.seconds + 2)]
        else:  # enough lone jobs to outlast the sampling on this machine
            cmd = ["latency.php", gearmands[0].address, "noop", str(int(args.seconds * 3000)), "0"]
        load = subprocess.Popen(["php", str(PHP_DIR / cmd[0]), *cmd[1:]], stdout=subprocess.PIPE)
        time.sleep(1)  # past the start-up
        subprocess.run(
            [
                spy,
                "record",
                "-p",
                str(procs[0].pid),
                "-d",
                str(int(args.seconds)),
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                str(raw),
            ],
            capture_output=True,
            check=True,
        )
        out, _ = load.communicate()
        print(f"load: {out.decode().strip()[:200]}")
        print(summarise(raw, args.top))


if __name__ == "__main__":
    main()
