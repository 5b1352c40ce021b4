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
        yield DONE

    def broken(self, error: GatewayError) -> bytes:
        return frame(_encode(error.payload()))


CHAT = ChatRenderer()
