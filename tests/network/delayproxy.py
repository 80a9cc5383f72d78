"""A TCP proxy that delays every byte by N ms each way: a slow link, since this kernel has no netem.

    python tests/network/delayproxy.py LISTEN_PORT TARGET_HOST:PORT DELAY_MS

Listens on 127.0.0.1:LISTEN_PORT; each accepted connection gets its own
connection to the target.  Data read at time t is written at t + DELAY_MS in
the order read, so the round trip grows by 2 x DELAY_MS while the bandwidth is
unchanged (many requests in flight still overlap, as on a real long link).
"""

from __future__ import annotations

import asyncio
import collections
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = asyncio.Event()
    eof = False

    async def read() -> None:
        nonlocal eof
        try:
            while data := await reader.read(65536):
                queue.append((loop.time() + delay, data))
                ready.set()
        finally:
            eof = True
            ready.set()

    async def write() -> None:
        while True:
            while not queue:
                if eof:
                    return
                ready.clear()
                await ready.wait()
            due, data = queue.popleft()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    reading = asyncio.create_task(read())
    try:
        await write()
    finally:
        reading.cancel()
        writer.close()


async def main(listen_port: int, target: str, delay_ms: float) -> None:
    host, _, port = target.rpartition(":")
    delay = delay_ms / 1000.0

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, int(port))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pump(client_r, server_w, delay), _pump(server_r, client_w, delay), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3])))
