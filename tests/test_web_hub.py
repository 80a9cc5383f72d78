"""The live stream's hub in-process: wake-ups that must not be missed, and what it keeps in memory."""

from __future__ import annotations

import asyncio
import json

from gearworker.web.events import Hub

SESSION = "testsession01"


def data(chunk: str) -> object:
    return json.loads(chunk.split("data: ", 1)[1])


async def test_an_event_published_while_the_stream_hands_over_the_previous_one_is_not_missed() -> None:
    """A publish that lands while the stream is suspended at its ``yield`` wakes it at once.

    The stream used to read the hub's wake-up event only after the yield returned, so a publish in
    between was seen only at the next heartbeat, 15 s later: live updates fell asleep.
    """
    hub = Hub()
    stream = hub.stream(SESSION)
    assert (await anext(stream)).startswith("retry:")
    assert (await anext(stream)).startswith("event: hello\n")
    hub.publish(SESSION, "job", {"n": 1})
    assert data(await anext(stream)) == {"n": 1}  # the stream is now suspended at its yield
    hub.publish(SESSION, "job", {"n": 2})  # the consumer is still writing the previous event
    assert data(await asyncio.wait_for(anext(stream), 2)) == {"n": 2}
    hub.close()
    await stream.aclose()


async def test_a_broadcast_while_the_stream_hands_over_an_event_is_not_missed() -> None:
    hub = Hub()
    stream = hub.stream(SESSION)
    await anext(stream)
    await anext(stream)
    hub.broadcast("photo", {"n": 1})
    assert data(await anext(stream)) == {"n": 1}
    hub.broadcast("photo", {"n": 2})
    assert data(await asyncio.wait_for(anext(stream), 2)) == {"n": 2}
    hub.close()
    await stream.aclose()
