"""The SSE reader accepts what real upstreams send: split chunks, CRLF, comments, multi-line data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from engine.wires.sse import Event, iter_events


def events_of(*chunks: bytes) -> list[Event]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def collect() -> list[Event]:
        return [event async for event in iter_events(source())]

    return asyncio.run(collect())


def test_events_split_across_chunks_are_joined() -> None:
    assert events_of(b'data: {"a"', b":1}\n", b"\ndata: [DONE]\n\n") == [Event(b'{"a":1}'), Event(b"[DONE]")]


def test_crlf_line_endings_even_split_between_chunks() -> None:
    assert events_of(b"data: x\r", b"\n\r\n") == [Event(b"x")]


def test_comments_keepalives_and_named_events() -> None:
    raw = b": OPENROUTER PROCESSING\n\nevent: response.created\ndata: {}\n\n"
    assert events_of(raw) == [Event(b"{}", "response.created")]


def test_multi_line_data_is_joined_with_newlines_and_a_final_event_without_blank_line_is_kept() -> None:
    assert events_of(b"data: a\ndata: b\n\ndata: tail") == [Event(b"a\nb"), Event(b"tail")]
