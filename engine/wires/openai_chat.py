"""The OpenAI Chat Completions wire (`POST {base}/chat/completions`), spoken by OpenAI and by every
OpenAI-compatible provider. The canonical shape is this wire's own, so the codec is nearly identity:
it names the upstream model, forces the usage chunk when streaming (metering needs it), and hides that
chunk again from clients that did not ask for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from engine.wires.base import (
    JSON,
    Call,
    Lowered,
    StreamBroken,
    StreamItem,
    UpstreamError,
    Usage,
    error_from_doc,
    event_object,
    openai_error_of,
)
from engine.wires.openai_media import OPENAI_MEDIA
from engine.wires.sse import Event

_DONE = b"[DONE]"
_decode = msgspec.json.decode


class OpenAIChatWire:
    name = "openai_chat"
    shape = "chat"  # what it speaks upstream
    accepts = "chat"  # what `lower` takes
    siblings = OPENAI_MEDIA  # the OpenAI family's other endpoints, by client shape

    def lower(self, body: JSON, call: Call) -> Lowered:
        body["model"] = call.upstream_model
        if call.stream:
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return Lowered("/chat/completions", body)

    def raise_json(self, doc: JSON, call: Call) -> JSON:
        call.usage = Usage.from_chat(doc.get("usage"))
        return doc

    async def raise_stream(self, events: AsyncIterator[Event], call: Call) -> AsyncIterator[StreamItem | UpstreamError]:
        async for event in events:
            data = event.data
            if data == _DONE:
                return
            chunk = event_object(data)
            if "error" in chunk and not chunk.get("choices"):
                yield error_from_doc(chunk)
                continue
            usage = chunk.get("usage")
            if not usage and not chunk.get("choices"):
                continue  # carries nothing for a client (Azure's leading chunk of prompt filter results)
            if usage:
                call.usage = Usage.from_chat(usage)
                if not call.include_usage:
                    if not chunk.get("choices"):
                        continue  # the usage-only chunk we forced; the client did not ask for it
                    chunk["usage"] = None
                    yield chunk
                    continue
            yield data
        raise StreamBroken("upstream stream ended without [DONE]")

    def error_of(self, body: bytes) -> UpstreamError:
        return openai_error_of(body)
