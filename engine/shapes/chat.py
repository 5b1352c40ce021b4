"""The Chat Completions client shape: `chat.completion` JSON, or `data:` chunks ending in `[DONE]`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from engine.errors import GatewayError
from engine.shapes.base import Sanitize
from engine.wires.base import JSON, Call, StreamItem, UpstreamError
from engine.wires.sse import frame

_encode = msgspec.json.encode
DONE = frame(b"[DONE]")


class ChatRenderer:
    """`done`: the frame that ends a complete stream (`[DONE]` for chat clients; none for OpenAI's media
    streams, whose last event says it is the last)."""

    def __init__(self, done: bytes | None = DONE) -> None:
        self.done = done

    def json(self, doc: JSON, call: Call) -> JSON:
        return doc

    async def frames(
        self, items: AsyncIterator[StreamItem | UpstreamError], call: Call, sanitize: Sanitize
    ) -> AsyncIterator[bytes]:
        async for item in items:
            if isinstance(item, UpstreamError):
                yield frame(_encode(sanitize(None, item).payload()))  # OpenAI's mid-stream error: no [DONE]
                return
            yield frame(item if isinstance(item, bytes) else _encode(item))
        if self.done is not None:
            yield self.done

    def broken(self, error: GatewayError) -> bytes:
        return frame(_encode(error.payload()))


CHAT = ChatRenderer()
EVENTS = ChatRenderer(done=None)  # events relayed as they came: the media endpoints' streams
