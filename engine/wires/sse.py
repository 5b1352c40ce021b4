"""Server-sent events: split an upstream byte stream into events, and frame events for the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    data: bytes
    event: str | None = None


async def iter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    """Parse SSE per the WHATWG rules we need: `event:` and (multi-line) `data:` fields, comments
    ignored, events ended by a blank line; CRLF and LF line endings both accepted.

    One upstream read often holds hundreds of events (a fast stream, or a slow client's backlog): they are
    cut out by position and the rest of the buffer is kept once per read, not re-copied after each event,
    and the usual event, one `data: ` line, skips the general parser."""
    buffer = b""
    async for chunk in chunks:
        buffer = buffer + chunk if buffer else chunk
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # a CRLF may straddle two chunks
                continue
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            block = buffer[start:end]
            start = end + 2
            if block.startswith(b"data: ") and b"\n" not in block:
                yield Event(block[6:])
            elif (event := _parse_block(block)) is not None:
                yield event
        if start:
            buffer = buffer[start:]
    if buffer.strip():
        event = _parse_block(buffer)
        if event is not None:
            yield event


def _parse_block(block: bytes) -> Event | None:
    name: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        key, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if key == b"data":
            data.append(value)
        elif key == b"event":
            name = value.decode("utf-8", "replace")
    if not data:
        return None
    return Event(b"\n".join(data), name)


def frame(data: bytes, event: str | None = None) -> bytes:
    """One SSE event as bytes on the wire."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
