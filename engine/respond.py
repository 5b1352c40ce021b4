"""Respond: a proxied JSON answer, sent as the bytes and headers the gateway already has.

A Litestar `Response` is built for content yet to be rendered: on the way out it copies its headers, picks
a serializer, renders the content, builds an `ASGIResponse` and encodes every header again. A proxied answer
is already encoded JSON with a handful of string headers, and that machinery was ~10x the cost of sending it
(`bench/README.md`, issue 13). `JSONAnswer` is still a `Response`, so handlers, the attempt loop (which stamps
its diagnostic headers on `headers` after the fact) and Litestar's handler plumbing treat it as one, but it is
its own ASGI answer: Litestar sends it as it is.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

_JSON = (b"content-type", b"application/json")


class JSONAnswer(Response[bytes]):
    __slots__ = ()

    status_code: int

    def __init__(self, body: bytes, headers: dict[str, str], status_code: int = 200) -> None:
        # Not Response.__init__: it normalizes cookies, headers and type encoders this answer never has.
        self.content = body
        self.headers = headers  # the caller's dict: headers added later (the attempt trail's) are sent too
        self.status_code = status_code
        self.media_type = "application/json"
        self.background = None
        self.cookies = []
        self.encoding = "utf-8"
        self.response_type_encoders = {}

    def to_asgi_response(self, app: Any, request: Request[Any, Any, Any], **_: Any) -> JSONAnswer:  # type: ignore[override]
        return self  # route-level headers, cookies and encoders are none for the proxied routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [_JSON, (b"content-length", str(len(self.content)).encode())]
        raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": self.status_code, "headers": raw}
        await send(start)
        body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": self.content, "more_body": False}
        await send(body)
