"""Every Python call between a lone job's packets and the worker's answers: a count no noise moves.

    .venv/bin/python -m bench.calls

With a pause before each job (``bench.reaction --gap-us 1000``) the caches
are cold when a wake comes, and each Python call on the way to the answer
costs a microsecond or more: the number of calls is what to cut, and unlike
a time it reads the same on every run.  A real :class:`PacketStream` (parser,
session, worker, runner, handler, encoder) is fed the NOOP that wakes a
sleeping worker, then the JOB_ASSIGN_UNIQ of a no-op job, as gearmand sends
them; ``sys.setprofile`` lists the calls from the read to the first write.
"""

from __future__ import annotations

import asyncio
import os
import sys
from types import FrameType
from typing import Any

import uvloop

from gearworker import config, logs
from gearworker.metrics import NO_METRICS
from gearworker.protocol import Magic, Packet, PacketType, encode
from gearworker.worker.dispatch import Worker
from gearworker.worker.registry import discover

from .hotpath import HANDLERS, one_connection

WAKES = {
    "NOOP -> grab": encode(Packet(PacketType.NOOP, (), Magic.RES)),
    "job -> result": encode(Packet(PacketType.JOB_ASSIGN_UNIQ, (b"H:host:1", b"noop", b"", b""), Magic.RES)),
}


async def calls() -> dict[str, tuple[list[str], int]]:
    """For each wake: the Python functions called before the write, in order, and how many C calls."""
    logs.configure("info", "json", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the whole run
    settings = config.load(None, env={}, overrides={"servers": ["127.0.0.1:1"], "handlers_dir": str(HANDLERS)})
    _, _, stream, transport = one_connection(Worker(settings, discover(HANDLERS), None, metrics=NO_METRICS))
    await asyncio.sleep(0)
    stream.data_received(encode(Packet(PacketType.NO_JOB, (), Magic.RES)))  # the first probe's answer: asleep
    await asyncio.sleep(0)
    seen: list[tuple[str, str]] = []
    recording = False

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if recording and event == "call":
            seen.append(("py", f"{frame.f_code.co_qualname}"))
        elif recording and event == "c_call":
            seen.append(("c", getattr(arg, "__qualname__", repr(arg))))

    def write(data: bytes) -> None:
        nonlocal recording
        recording = False

    for data in WAKES.values():  # once untraced: first-time costs (type caches, imports) are not per job
        stream.data_received(data)
        await asyncio.sleep(0)
    transport.write = write  # type: ignore[method-assign]
    found = {}
    for name, data in WAKES.items():
        seen.clear()
        recording = True
        sys.setprofile(profile)
        try:
            stream.data_received(data)
        finally:
            sys.setprofile(None)
        python = [f for kind, f in seen if kind == "py" and f != "calls.<locals>.write"]
        found[name] = (python, sum(kind == "c" for kind, _ in seen))
        await asyncio.sleep(0)
    return found


def main() -> None:
    found = uvloop.run(calls())
    print("Python calls from a read to its answer's write (lone jobs, gearworker at defaults)\n")
    print("| wake | Python calls | C calls | the Python calls, in order |")
    print("|---|---|---|---|")
    for name, (python, c_calls) in found.items():
        print(f"| {name} | {len(python)} | {c_calls} | {' '.join(python)} |")


if __name__ == "__main__":
    main()
