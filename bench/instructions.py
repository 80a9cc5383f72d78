"""Instructions per job on the worker's hot path, counted by valgrind: a figure a noisy machine cannot move.

    .venv/bin/python -m bench.instructions              # at info (the default) and warning: the job.done line's share
    .venv/bin/python -m bench.instructions --batch 1    # one job per read
    .venv/bin/python -m bench.instructions --levels info
    .venv/bin/python -m bench.instructions --check     # a lone job at info against bench/instructions.json (CI)
    .venv/bin/python -m bench.instructions --record    # write this tree's figure there

``bench.hotpath`` runs under cachegrind twice, with 2,000 and 12,000 jobs; the
difference divided by 10,000 cancels start-up out.  Under valgrind a job
takes ~50x longer, so the Runner's 20 ms batch of after-hooks would hold far
fewer jobs than at full speed: ``--after-delay 10`` (the default here) lets
each batch fill to the 128 jobs it holds at full speed.  Also printed: misses
in cachegrind's simulated 32 KiB instruction and data caches, per job.  Needs
``valgrind`` (Debian's package); about a minute per level.

``--check`` counts a lone job (batch 1, info: the worker's defaults) and fails
when it is more than :data:`TOLERANCE` away from the figure recorded in
``bench/instructions.json``: a count, not a time, so CI can hold the per-job
path to it on a busy machine.  A change that moves the figure on purpose
records the new one with ``--record`` and says why in its commit message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

_COUNTS = {"I   refs": "instructions", "I1  misses": "I1 misses", "D1  misses": "D1 misses"}
#: The recorded figure --check compares with.
RECORD = Path(__file__).resolve().parent / "instructions.json"
#: How far a lone job's count may move from the recorded figure before --check fails.
TOLERANCE = 0.05


def counts(jobs: int, level: str, batch: int, after_delay: float) -> dict[str, int]:
    """cachegrind's totals for one bench.hotpath run."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=yes",
            "--LL=1048576,16,64",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.hotpath",
            "--jobs",
            str(jobs),
            "--batch",
            str(batch),
            "--no-metrics",
            "--log-level",
            level,
            "--after-delay",
            str(after_delay),
        ],
        capture_output=True,
        text=True,
        check=True,
        # A fixed hash seed: dict and set layouts, and so the instructions per job, the same run to run.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    ).stderr
    found = {}
    for key, name in _COUNTS.items():
        match = re.search(rf"{re.escape(key)}:\s+([\d,]+)", out)
        if match is None:
            raise RuntimeError(f"no {key!r} in valgrind's output:\n{out[-2000:]}")
        found[name] = int(match.group(1).replace(",", ""))
    return found


def per_job(level: str, batch: int, after_delay: float, small: int = 2_000, big: int = 12_000) -> dict[str, float]:
    """Each count per job: the difference between a run of ``big`` and one of ``small`` jobs."""
    a, b = counts(small, level, batch, after_delay), counts(big, level, batch, after_delay)
    return {name: (b[name] - a[name]) / (big - small) for name in a}


def _environment() -> dict[str, str]:
    """What the count depends on besides the code: the interpreter and the libraries on the path."""
    return {
        "python": platform.python_version(),
        **{name: version(name) for name in ("uvloop", "structlog", "orjson")},
    }


def check(after_delay: float) -> int:
    """Compare a lone job's count at info with the recorded one; 0 when within TOLERANCE."""
    recorded = json.loads(RECORD.read_text())
    count = per_job("info", 1, after_delay)["instructions"]
    change = count / recorded["instructions"] - 1
    print(
        f"a lone job at info: {count:,.0f} instructions; recorded {recorded['instructions']:,.0f} "
        f"({change:+.1%}, tolerance {TOLERANCE:.0%})"
    )
    if abs(change) <= TOLERANCE:
        return 0
    now = _environment()
    if now != recorded["environment"]:
        print(f"the environment differs from the recorded one: {now} against {recorded['environment']}")
    print(
        "bench.instructions: the per-job path moved by more than the tolerance; if that is intended, "
        "record the new figure (python -m bench.instructions --record) and say why in the commit",
        file=sys.stderr,
    )
    return 1


def record(after_delay: float) -> None:
    """Write this tree's lone-job count at info to RECORD."""
    count = per_job("info", 1, after_delay)["instructions"]
    RECORD.write_text(
        json.dumps(
            {
                "what": "instructions per lone job at info (batch 1)",
                "instructions": round(count),
                "environment": _environment(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"recorded {count:,.0f} instructions a lone job in {RECORD.name}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n")[0])
    p.add_argument("--levels", nargs="+", default=["info", "warning"])
    p.add_argument("--batch", type=int, default=20, help="jobs per read")
    p.add_argument("--after-delay", type=float, default=10.0)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="a lone job against bench/instructions.json")
    what.add_argument("--record", action="store_true", help="write a lone job's count to bench/instructions.json")
    args = p.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench.instructions needs valgrind (apt-get install valgrind)")
    if args.check:
        sys.exit(check(args.after_delay))
    if args.record:
        record(args.after_delay)
        return
    rows = {level: per_job(level, args.batch, args.after_delay) for level in args.levels}
    print(f"Per job, bench.hotpath (batch {args.batch}, metrics off), under cachegrind:\n")
    print("| log level | instructions | I1 misses | D1 misses |")
    print("|---|---|---|---|")
    for level, row in rows.items():
        print(f"| {level} | {row['instructions']:,.0f} | {row['I1 misses']:,.0f} | {row['D1 misses']:,.0f} |")
    if "info" in rows and "warning" in rows:
        line = {k: rows["info"][k] - rows["warning"][k] for k in rows["info"]}
        print(
            f"\nthe job.done line (info - warning): {line['instructions']:,.0f} instructions, "
            f"{line['I1 misses']:,.0f} I1 misses, {line['D1 misses']:,.0f} D1 misses per job"
        )


if __name__ == "__main__":
    main()
