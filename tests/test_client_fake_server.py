"""What a real gearmand cannot be made to send: a fake job server written with the sans-IO codec.

Only for malformed or unusual replies; everything else is tested against real gearmand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from gearworker import Client
from gearworker.errors import ConnectionLost, JobFailed
from gearworker.protocol import Magic, Packet, PacketType, Parser, encode, response

Reply = Callable[[Packet, int], list[bytes]]


@pytest.fixture
async def fake_server() -> AsyncIterator[Callable[[Reply], asyncio.Future[str]]]:
    servers: list[asyncio.Server] = []

    def start(reply: Reply) -> asyncio.Future[str]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            parser = Parser(expect=Magic.REQ)
            count = 0
            while data := await reader.read(65536):
                for packet in parser.feed(data):
                    if packet.type is PacketType.OPTION_REQ:
                        writer.write(encode(response(PacketType.OPTION_RES, packet.args[0])))
                        continue
                    count += 1
                    for chunk in reply(packet, count):
                        writer.write(chunk)
            writer.close()

        async def serve() -> str:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            servers.append(server)
            return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

        return asyncio.ensure_future(serve())

    yield start
    for server in servers:
        server.close()


def created(n: int) -> bytes:
    return encode(response(PacketType.JOB_CREATED, f"H:fake:{n}".encode()))


async def test_work_fail_with_a_stray_nul_after_the_handle_still_reaches_its_caller(fake_server: Callable) -> None:
    """gearmand 1.1.20 can send WORK_FAIL as handle + NUL + data: the handle is cut at the NUL."""

    def reply(packet: Packet, n: int) -> list[bytes]:
        fail = response(PacketType.WORK_FAIL, f"H:fake:{n}".encode() + b"\x00ValueError: mangled")
        return [created(n), encode(fail)]

    address = await fake_server(reply)
    async with Client([address]) as client:
        with pytest.raises(JobFailed) as failed:
            await asyncio.wait_for(client.submit("f", "x"), 10)
        assert failed.value.handle == b"H:fake:1"


async def test_garbage_from_the_server_fails_the_jobs_in_flight_and_the_client_reconnects(
    fake_server: Callable,
) -> None:
    """Bytes that are not Gearman fail every job on that connection with ConnectionLost (no hang); the next
    submit opens a new connection."""

    def reply(packet: Packet, n: int) -> list[bytes]:
        if packet.arg("data") == b"bad":
            return [created(n), b"HTTP/1.1 400 Bad Request\r\n\r\n"]
        if packet.arg("data") == b"hold":
            return [created(n)]  # never completes
        return [created(n), encode(response(PacketType.WORK_COMPLETE, f"H:fake:{n}".encode(), b"fine"))]

    address = await fake_server(reply)
    async with Client([address]) as client:
        held = asyncio.ensure_future(client.submit("f", "hold"))
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectionLost, match="invalid data"):
            await asyncio.wait_for(client.submit("f", "bad"), 10)
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(held, 10)
        assert await asyncio.wait_for(client.submit("f", "ok"), 10) == b"fine"


async def test_a_reply_nobody_asked_for_resets_the_connection(fake_server: Callable) -> None:
    """An extra JOB_CREATED would shift every later reply onto the wrong caller: the connection is dropped
    instead, failing its jobs with ConnectionLost."""

    def reply(packet: Packet, n: int) -> list[bytes]:
        return [created(n), created(n + 100)]

    address = await fake_server(reply)
    async with Client([address]) as client:
        with pytest.raises(ConnectionLost, match="JOB_CREATED with no request"):
            await asyncio.wait_for(client.submit("f", "x"), 10)
