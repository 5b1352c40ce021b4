"""Respond: a proxied JSON answer, sent as the bytes and headers the gateway already has.

A Litestar `Response` is built for content yet to be rendered: on the way out it copies its headers, picks
a serializer, renders the content, builds an `ASGIResponse` and encodes every header again. A proxied answer
is already encoded JSON with a handful of string headers, and that machinery was ~10x the cost of sending it
(`bench/README.md`, issue 13). `JSONAnswer` is still a `Response`, so handlers, the attempt loop (which stamps
its diagnostic headers on `headers` after the fact) and Litestar's handler plumbing treat it as one, but it is
its own ASGI answer: Litestar sends it as it is.

A large JSON answer goes out in parts of `PART` bytes, each sent when the client has taken the one before (the
server's `send` waits for its write buffer to drain below the high-water mark first): a client that does not
read holds one part in the server's buffer, not a copy of the whole answer. A client that takes nothing for
`idle` seconds (routes.toml `answer_idle_seconds`) is dropped, and the answer's memory freed with it. An answer
of one part is one `send`, as before.

`StreamAnswer` does the same for relayed streams (SSE events, audio bytes). Litestar's `Stream` runs the body in
a task group of its own, with a second task listening for the client's disconnect, and cancels both at the end
(anyio formats the cancelling task's repr for its message): ~0.3 ms of CPU per streamed request here, more than
relaying a short answer. `StreamAnswer` sends the body from the request's own task, and listens for the
client's disconnect as the handler did (`engine.timeouts.Caller`): only once the upstream call has been in
flight `SLOW` seconds, so a short stream never pays for a listener task, and a client that leaves a long one
still cancels it, with the upstream call, within a second. A client that stays connected but takes none of a
stream for `answer_idle_seconds` is dropped the same way, by its attempt's watch (`Caller.drop`): it would
otherwise hold the upstream call open as long as it liked. Per frame that costs a clock read and two writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from litestar import Request, Response
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from engine.timeouts import Caller

log = logging.getLogger("engine.respond")
_JSON = (b"content-type", b"application/json")
PART = 256 * 1024  # a JSON answer larger than this goes out in parts of this size


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class JSONAnswer(Response[bytes]):
    """An encoded JSON answer; over `PART` bytes, sent in parts to a client that must read each within `idle`
    seconds (see the module's doc)."""

    __slots__ = ("idle",)

    status_code: int

    def __init__(self, body: bytes, headers: dict[str, str], status_code: int = 200, idle: float = 30.0) -> None:
        # Not Response.__init__: it normalizes cookies, headers and type encoders this answer never has.
        self.idle = idle
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
        raw += _encoded(self.headers)
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": self.status_code, "headers": raw}
        await send(start)
        content = self.content
        if len(content) <= PART:
            body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": content, "more_body": False}
            await send(body)
            return
        try:
            await _send_parts(send, content, self.idle)
        except TimeoutError:
            # Returning mid-answer makes the server close the connection (uvicorn logs that it did).
            log.info("client read none of a %d-byte answer for %g s; connection dropped", len(content), self.idle)
        finally:
            self.content = b""  # nothing else may keep the answer alive once the client is gone


async def _send_parts(send: Send, content: bytes, idle: float) -> None:
    """`content` in `PART`-byte parts; each `send` must return within `idle` seconds (TimeoutError if not)."""
    loop = asyncio.get_running_loop()
    last = len(content) - PART
    async with asyncio.timeout(None) as guard:
        for start in range(0, len(content), PART):
            guard.reschedule(loop.time() + idle)
            part: HTTPResponseBodyEvent = {
                "type": "http.response.body",
                "body": content[start : start + PART],
                "more_body": start < last,
            }
            await send(part)


class StreamAnswer(Response[bytes]):
    """A relayed stream: its frames sent as they come, from the request's own task (see the module's doc).

    A client that hangs up mid-stream cancels the task (through `caller`, once it listens); the frames'
    generator is then closed, which runs the relay's own clean-up (closing the upstream, the ledger row)."""

    __slots__ = ("_content_type", "caller", "frames")

    status_code: int

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        media_type: str,
        headers: dict[str, str],
        caller: Caller | None,
        status_code: int = 200,
    ) -> None:
        self.frames = frames
        self.caller = caller
        self.content = b""
        self.headers = headers  # the caller's dict, as JSONAnswer's
        self.status_code = status_code
        # Litestar's `Stream` says which charset a text type is in; so does this answer.
        text = media_type.startswith("text/") and "charset=" not in media_type
        self.media_type = f"{media_type}; charset=utf-8" if text else media_type
        self._content_type = self.media_type.encode("latin-1")
        self.background = None
        self.cookies = []
        self.encoding = "utf-8"
        self.response_type_encoders = {}

    def to_asgi_response(self, app: Any, request: Request[Any, Any, Any], **_: Any) -> StreamAnswer:  # type: ignore[override]
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(b"content-type", self._content_type), *_encoded(self.headers)]
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": self.status_code, "headers": raw}
        frames, caller = self.frames, self.caller
        task = caller.resume() if caller is not None else None
        try:
            await send(start)
            if caller is None:
                async for frame in frames:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
            else:
                clock = asyncio.get_running_loop().time
                async for frame in frames:
                    caller.sending_since = clock()  # a send that waits `caller.idle` for the client drops it
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                    caller.sending_since = math.inf
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if caller is None or not caller.gone or task is None or task.uncancel() != 0:
                raise
            # The client hung up and its listener cancelled this task, or took nothing for `idle` seconds and
            # the attempt's watch did: nobody is left to answer.
            if caller.dropped:
                log.info("client read none of a stream for %g s; connection dropped", caller.idle)
        finally:
            if caller is not None:
                caller.stop()
            if isinstance(frames, AsyncGenerator):
                await frames.aclose()


async def batched(frames: AsyncIterator[bytes], most: int = 64) -> AsyncGenerator[bytes]:
    """The frames of a relayed stream, joined: those produced while the previous write was under way go out
    together, in one ASGI message and one socket write.

    An upstream that is ahead of the client (a fast model, a backlog after a slow read) hands the relay one
    read with many events; written one message each, a write per event was most of the cost of relaying it.
    A task runs the frames ahead, up to `most` of them; whenever this generator is asked for more, it takes all
    that are ready. The first frame goes out alone, as soon as it exists (time to first token), and a stream
    whose events arrive one at a time is written one at a time, as before. Closing or cancelling this
    generator (the client left) cancels the task, so the relay's own clean-up (closing the upstream, the
    ledger row) runs as it did.
    """
    try:
        first = await anext(frames)
    except StopAsyncIteration:
        return
    yield first
    pending: list[bytes] = []
    ready, room = asyncio.Event(), asyncio.Event()
    room.set()

    async def ahead() -> None:
        try:
            async for frame in frames:
                pending.append(frame)
                ready.set()
                if len(pending) >= most:
                    room.clear()
                    await room.wait()
        finally:
            ready.set()

    task = asyncio.ensure_future(ahead())
    try:
        while True:
            if not pending and not task.done():
                await ready.wait()
            ready.clear()
            if pending:
                joined = b"".join(pending)
                pending.clear()
                room.set()
                yield joined
            elif task.done():
                task.result()  # the relay's own exception, if it raised one
                return
    finally:
        if not task.done() or isinstance(frames, AsyncGenerator):
            # The client left (Litestar cancels the writer) or the stream was closed: stop the task, then close
            # the relay itself, whose clean-up closes the upstream. A task parked on `room` never reaches the
            # relay's own awaits, so the relay would otherwise wait for the garbage collector; and the writer's
            # cancelled scope would interrupt awaits here, so the clean-up runs as a task of its own.
            cleanup = asyncio.ensure_future(_stop(task, frames))
            _CLEANUPS.add(cleanup)
            cleanup.add_done_callback(_CLEANUPS.discard)


_CLEANUPS: set[asyncio.Future[None]] = set()  # strong references until they finish


async def _stop(task: asyncio.Future[None], frames: AsyncIterator[bytes]) -> None:
    task.cancel()
    # The task's own failure, if any, already reached the writer (or no one is left to tell).
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await task
    if isinstance(frames, AsyncGenerator):
        await frames.aclose()
