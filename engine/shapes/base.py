"""The renderer interface shared by client shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from engine.errors import GatewayError
from engine.wires.base import JSON, Call, StreamItem, UpstreamError

# (upstream HTTP status, or None for an error inside a 200 answer or a stream) → the client's error
Sanitize = Callable[[int | None, UpstreamError], GatewayError]


class Renderer(Protocol):
    def json(self, doc: JSON, call: Call) -> JSON:
        """The raised answer → the document the client receives."""
        ...

    def frames(
        self, items: AsyncIterator[StreamItem | UpstreamError], call: Call, sanitize: Sanitize
    ) -> AsyncIterator[bytes]:
        """Raised stream items → SSE bytes, ending the stream the way this shape's clients expect."""
        ...

    def broken(self, error: GatewayError) -> bytes:
        """The last frame of a stream the upstream cut short."""
        ...
