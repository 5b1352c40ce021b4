"""The HTTP server's own bounds (routes.toml `[server]`), answered in OpenAI's error shape.

uvicorn's httptools protocol (kept: uvloop + httptools were chosen by measurement) reads headers of any size
and count and waits forever for a head or a body. `GatewayProtocol` adds, per connection:

- a byte and field count on the request head: past `max_header_kb` or `max_headers`, a 431;
- a timer while a request's head is incomplete (from the connection's start, or a later request's first
  byte) and one while its body is: past `header_timeout_seconds` / `body_timeout_seconds`, a 408;
- a 400 in OpenAI's shape for bytes that are not HTTP/1.1 (uvicorn's is plain text);
- at `max_connections` of this worker, room for a new connection is made by ending the one that has waited
  longest for an unfinished head (408); with none, the new connection is a 503.

A request whose head and body arrive in one read costs ~1 us and no timer (`bench/probe_server.py
hotpath`); timers run only while a request is incomplete. Each of these answers closes the connection, after
a short linger in which what the client still sends is read and dropped: closing a socket with unread bytes
resets it, and the client would lose the answer. A HEAD request gets the same status and headers, no body.
"""

from __future__ import annotations

import asyncio
import functools
import http
import os
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from engine.errors import GatewayError
from engine.spec.models import ServerLimits

ENV = "ENGINE_SERVER"  # the `[server]` table as JSON, set by `engine serve` for every worker process
LINGER_SECONDS = 2.0  # after an error answer: how long the client's remaining bytes are read and dropped

# Where a connection's current request is.
_IDLE, _HEAD, _BODY, _CLOSING = 0, 1, 2, 3


@functools.cache
def limits() -> ServerLimits:
    """This worker's bounds: what `engine serve` read from routes.toml, else the defaults."""
    raw = os.environ.get(ENV)
    return ServerLimits.model_validate_json(raw) if raw else ServerLimits()


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop reading a head that is over a bound."""

    def __init__(self, fields: bool) -> None:
        super().__init__()
        self.fields = fields  # over the field count, not the size


def error_response(error: GatewayError, default_headers: list[tuple[bytes, bytes]], head_only: bool) -> bytes:
    """A whole HTTP/1.1 answer carrying `error`, closing the connection (HEAD: the headers alone)."""
    body = error.body()
    phrase = http.HTTPStatus(error.status).phrase.encode()
    lines = [b"HTTP/1.1 %d %s" % (error.status, phrase)]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [name.encode("latin-1") + b": " + value.encode("latin-1") for name, value in error.headers.items()]
    lines += [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


def headers_too_large(bound: ServerLimits, fields: bool) -> GatewayError:
    """A 431: too many header fields (`fields`), or a head over the size bound."""
    over = (
        f"more than {bound.max_headers} header fields"
        if fields
        else f"more than {bound.max_header_kb} KiB of request line and headers"
    )
    return GatewayError(
        431,
        f"The request's headers are too large: {over} (at most {bound.max_header_kb} KiB in at most"
        f" {bound.max_headers} fields). Send less in headers; large values belong in the body.",
        code="request_headers_too_large",
    )


def too_slow(part: str, seconds: float) -> GatewayError:
    return GatewayError(
        408,
        f"The request's {part} did not arrive within {seconds:g} s. Send the whole request promptly, or retry.",
        code="request_timeout",
    )


def evicted_for_room(bound: ServerLimits) -> GatewayError:
    return GatewayError(
        408,
        f"The request's headers were still incomplete when the gateway, at its bound of {bound.max_connections}"
        " connections, needed room for another. Send the whole request promptly, or retry.",
        code="request_timeout",
    )


def not_http(reason: str) -> GatewayError:
    return GatewayError(400, f"The request is not valid HTTP/1.1 ({reason[:200]}).", code="invalid_http_request")


def too_many_connections(bound: int) -> GatewayError:
    return GatewayError(
        503,
        f"The gateway has too many open connections (at most {bound} per worker); retry shortly.",
        type="api_error",
        code="too_many_connections",
        headers={"retry-after": "1"},
    )


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of routes.toml `[server]` (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.bound = limits()
        self._max_head = self.bound.max_header_kb * 1024
        self._max_headers = self.bound.max_headers
        self._state = _IDLE
        # Bytes read since the current request began (with, in its last read, maybe some of its body).
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None

    # connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.bound.max_connections
        if cap is not None and len(self.connections) > cap and self._open() > cap and not self._evict_slowest():
            self._answer(too_many_connections(cap))
            return
        self._head_timer = self.loop.call_later(self.bound.header_timeout_seconds, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSING
        self._cancel_timers()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _CLOSING:
            return  # an error was answered: the rest is dropped until the linger ends
        self._unset_keepalive_if_required()
        if state != _BODY:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if self._state == _CLOSING:
                return  # a callback already answered
            cause = exc.__context__  # what a callback raised
            if isinstance(cause, _HeadTooLarge):
                self._answer(headers_too_large(self.bound, cause.fields))
            else:  # llhttp's reason names the fault; a failing callback's would only name the callback
                callback = isinstance(exc, httptools.HttpParserCallbackError)
                self.logger.info("Invalid HTTP request received: %s", exc)
                self._answer(not_http(str(exc) if str(exc) and not callback else "unreadable request line or headers"))
            return
        state = self._state
        if state == _HEAD:  # a head begun, not finished: check what has come of it
            if len(self.headers) > self._max_headers or self._head_bytes > self._max_head:
                self._answer(headers_too_large(self.bound, fields=len(self.headers) > self._max_headers))
            elif self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._head_timer = self.loop.call_later(self.bound.header_timeout_seconds, self._head_timeout)
        elif state == _BODY and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.bound.body_timeout_seconds, self._body_timeout)

    # parser callbacks: where the request is (the head's fields are not counted one by one: that would cost
    # every request a call per header; their list's length and the bytes read say enough)

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)  # (not super(): these run per request, each call counts)
        if self._state != _CLOSING:
            self._state = _HEAD

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if len(self.headers) > self._max_headers:
            raise _HeadTooLarge(fields=True)
        if self._head_bytes > self._max_head and self._head_size() > self._max_head:
            raise _HeadTooLarge(fields=False)  # (the bytes read may include a body: only then are fields summed)
        self._state = _BODY
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._state != _CLOSING:
            self._state = _IDLE
        self._head_bytes = 0
        HttpToolsProtocol.on_message_complete(self)

    def _head_size(self) -> int:
        """The head's size as sent, from its parts: request line and `name: value\\r\\n` fields."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    # the bounds' answers

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._state in (_IDLE, _HEAD) and not self.transport.is_closing():
            self._answer(too_slow("headers", self.bound.header_timeout_seconds))

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self._state != _BODY or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle.response_started:  # the app answered without the whole body: only the connection goes
            self._state = _CLOSING
            self.transport.close()
            return
        self._answer(too_slow("body", self.bound.body_timeout_seconds), head_only=self.scope["method"] == "HEAD")
        cycle.disconnected = True  # the app's receive() gets http.disconnect, its answer goes nowhere
        cycle.message_event.set()

    def _open(self) -> int:
        """This worker's connections not already ending (an answered error's linger, an eviction)."""
        return sum(1 for c in self.connections if not (isinstance(c, GatewayProtocol) and c._state == _CLOSING))

    def _evict_slowest(self) -> bool:
        """At the cap, make room by ending the connection that has waited longest for a head it has not
        finished (a slowloris holds its connections so), with its 408 now; False when none is waiting."""
        waiting = [c for c in self.connections if isinstance(c, GatewayProtocol) and c._head_timer is not None]
        if not waiting:
            return False
        slowest = min(waiting, key=lambda c: c._head_timer.when() if c._head_timer is not None else 0.0)
        slowest._state = _CLOSING
        slowest._cancel_timers()
        evicted = error_response(evicted_for_room(self.bound), self.server_state.default_headers, False)
        slowest.transport.write(evicted)
        slowest.transport.close()  # at once, not after a linger: the connection count must come down
        return True

    def _answer(self, error: GatewayError, head_only: bool = False) -> None:
        """Write `error` as the connection's last answer, then linger: read and drop, close."""
        self._state = _CLOSING
        self._cancel_timers()
        self._unset_keepalive_if_required()
        transport = self.transport
        transport.write(error_response(error, self.server_state.default_headers, head_only))
        if transport.can_write_eof():
            transport.write_eof()  # the client reads the answer, then EOF; closing waits for its EOF or the linger
        self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)

    def _cancel_timers(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
