"""The aiogear 0.2.6 worker for the comparison (runs in its own venv, see bench/README section in README.md).

Usage: python aiogear_worker.py HOST:PORT[,HOST:PORT...] [CONNECTIONS]

aiogear runs one job at a time per connection, so it gets 8 connections per
server (the best setting measured here), on uvloop.  Workloads arrive decoded
as text: fine for the benchmark's ASCII payloads.
"""

import asyncio
import sys
from typing import Any

import uvloop
from aiogear import Worker


def echo(job: Any) -> Any:
    return job.workload


def noop(job: Any) -> str:
    return ""


async def main(servers: str, connections: int) -> None:
    loop = asyncio.get_running_loop()
    for server in servers.split(","):
        host, port = server.rsplit(":", 1)
        for _ in range(connections):
            await loop.create_connection(lambda: Worker(echo, noop), host, int(port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8))
