"""Relayed streams are written in batches: what is ready goes out together, in order, and nothing else changes.
A relayed stream is its own ASGI answer: a short one starts no listener, and a client that leaves a long one
cancels it, clean-up included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from engine.respond import StreamAnswer, batched
from engine.timeouts import Caller


def collect(frames: AsyncIterator[bytes]) -> list[bytes]:
    async def run() -> list[bytes]:
        return [chunk async for chunk in batched(frames)]

    return asyncio.run(run())


async def frames_of(*groups: list[bytes]) -> AsyncIterator[bytes]:
    """Frames in groups: those of one group are ready at once (one upstream read), groups arrive apart."""
    for group in groups:
        for frame in group:
            yield frame
        await asyncio.sleep(0.01)


def test_the_first_frame_goes_out_alone_and_ready_frames_together_in_order() -> None:
    out = collect(frames_of([b"a", b"b", b"c"], [b"d", b"e"], [b"f"]))
    assert out[0] == b"a", "the first frame is not held back for the ones behind it"
    assert b"".join(out) == b"abcdef"
    assert out == [b"a", b"bc", b"de", b"f"]


def test_a_stream_arriving_one_frame_at_a_time_is_written_one_at_a_time() -> None:
    assert collect(frames_of([b"a"], [b"b"], [b"c"])) == [b"a", b"b", b"c"]


def test_an_empty_stream_writes_nothing() -> None:
    assert collect(frames_of()) == []


def test_the_relays_own_exception_reaches_the_writer() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"
        raise RuntimeError("relay failed")

    with pytest.raises(RuntimeError, match="relay failed"):
        collect(failing())


def test_closing_the_stream_cancels_the_relay_and_runs_its_clean_up() -> None:
    """The client left: the relay must stop reading the upstream and close it, as without batching."""
    cleaned = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            yield b"b"
            await asyncio.Event().wait()  # an upstream that never sends more
            yield b"never"
        finally:
            cleaned.set()

    async def run() -> list[bytes]:
        stream = batched(endless())
        got = [await anext(stream), await anext(stream)]
        await stream.aclose()
        await asyncio.wait_for(cleaned.wait(), timeout=5)
        return got

    assert asyncio.run(run()) == [b"a", b"b"]


def test_a_writer_far_behind_holds_the_relay_at_a_bounded_backlog() -> None:
    pulled = 0

    async def fast() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(1000):
            pulled += 1
            yield b"x"

    async def run() -> int:
        stream = batched(fast(), most=64)
        await anext(stream)
        await asyncio.sleep(0.05)  # the writer is busy; the relay runs ahead, but only so far
        ahead = pulled
        rest = [chunk async for chunk in stream]
        assert sum(len(c) for c in rest) == 999
        return ahead

    assert asyncio.run(run()) <= 1 + 64 + 1


class Client:
    """An ASGI client whose disconnect is set by the test; records what was sent and how often it was read."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.receives = 0
        self.left = asyncio.Event()

    async def receive(self) -> dict[str, object]:
        self.receives += 1
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, object]) -> None:
        self.sent.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")  # type: ignore[misc]


async def serve(answer: StreamAnswer, client: Client) -> None:
    await answer({"type": "http"}, client.receive, client.send)  # type: ignore[arg-type]


def test_a_short_stream_is_sent_whole_without_listening_for_the_client() -> None:
    async def run() -> Client:
        client = Client()
        caller = Caller(client.receive)
        caller.stop()  # as the handler does on returning the answer
        frames = frames_of([b"data: a\n\n", b"data: b\n\n"])
        await serve(StreamAnswer(frames, "text/event-stream", {"x-compose-attempts": "1"}, caller), client)
        return client

    client = asyncio.run(run())
    start = client.sent[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]  # type: ignore[operator]
    assert (b"x-compose-attempts", b"1") in start["headers"]  # type: ignore[operator]
    assert client.body() == b"data: a\n\ndata: b\n\n"
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert client.receives == 0, "a fast stream paid for a disconnect listener"


def test_a_client_leaving_a_slow_stream_cancels_it_and_its_clean_up_runs() -> None:
    cleaned = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            await asyncio.Event().wait()  # an upstream that never sends more
        finally:
            cleaned.set()

    async def run() -> Client:
        client = Client()
        caller = Caller(client.receive)
        caller.listen()  # the attempt's watch found the request slow while the handler ran
        caller.stop()
        serving = asyncio.ensure_future(serve(StreamAnswer(endless(), "text/event-stream", {}, caller), client))
        await asyncio.sleep(0.01)
        assert client.body() == b"a"
        client.left.set()
        await asyncio.wait_for(serving, timeout=5)  # ends quietly: nobody is left to answer
        await asyncio.wait_for(cleaned.wait(), timeout=5)
        assert caller.gone
        return client

    asyncio.run(run())
