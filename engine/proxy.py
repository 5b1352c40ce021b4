"""Send → raise → sanitize → respond, for one lowered request.

The upstream is always read as a stream so its status is known before its body: an error body is read up
to a bound, sanitized and answered with the upstream's status. A success is answered by the kind the lowered request
expects: JSON is raised by the wire codec to the OpenAI shape as one body; SSE is relayed event by event;
bytes (audio, video, subtitles) are relayed chunk by chunk as they arrive, with the upstream's content
type, never held whole. Every read is bounded (`engine.bounded`). Only 2xx is an answer and only 4xx/5xx an
upstream error: a redirect (never followed) or a status outside HTTP's range is a 502, as is an answer that
is not the JSON object its wire promises. Diagnostic headers go on every answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
from litestar import Response

from engine import carry_store
from engine.answers import AnswerRefused
from engine.bounded import AnswerLimits, AnswerTooLarge, UnsupportedEncoding, iter_decoded, read_decoded, read_prefix
from engine.errors import Failure, GatewayError, Kind, upstream_failure
from engine.gateway import Gateway
from engine.ledger import Trip, receipt_of
from engine.lower import UpstreamRequest
from engine.respond import JSONAnswer, StreamAnswer, batched
from engine.sanitize import Sanitizer
from engine.shapes.base import Renderer, Sanitize
from engine.timeouts import CALLER, PHASES, PhaseTimeout, Watch, WatchedStream, seconds_of
from engine.wires.base import StreamBroken, StreamItem, UpstreamError
from engine.wires.sse import iter_events

log = logging.getLogger("engine.proxy")
_encode = msgspec.json.encode
_decode = msgspec.json.decode


def diagnostic_headers(gw: Gateway, upstream: UpstreamRequest, trip: Trip) -> dict[str, str]:
    names = gw.specs.routes.headers
    candidate = upstream.candidate
    headers = {
        names.public_model: candidate.public_id,
        names.upstream_provider: candidate.provider.id,
        names.upstream_model: candidate.row.upstream,
    }
    if names.request_id:
        headers[names.request_id] = trip.request_id
    return headers


def _strip(gw: Gateway, doc: Any) -> Any:
    if isinstance(doc, dict) and gw.strip_fields and not gw.strip_fields.isdisjoint(doc):
        return {k: v for k, v in doc.items() if k not in gw.strip_fields}
    return doc


@dataclass
class Timer:
    """Splits wall time into the upstream's share and the gateway's own (the overhead header)."""

    started: float
    upstream: float = 0.0

    def overhead_ms(self) -> str:
        return f"{(time.perf_counter() - self.started - self.upstream) * 1000:.3f}"


@functools.lru_cache(maxsize=4096)
def _parsed_url(url: str) -> httpx.URL:
    return httpx.URL(url)  # a handful of distinct URLs per provider: parse each once


@functools.lru_cache(maxsize=256)
def _timeout(connect: float) -> dict[str, float | None]:
    """What the transport itself bounds: connecting. Every later phase is the attempt's `Watch`."""
    return httpx.Timeout(None, connect=connect).as_dict()


@functools.lru_cache(maxsize=1024)
def _headers(items: tuple[tuple[str, str], ...]) -> httpx.Headers:
    """A lowered request's headers, normalised by httpx once per distinct set: they are the provider's own
    (its spec's headers and credential), the same on every request with one content type and `accept`, and
    `httpx.Request` copies a `Headers` it is given as a list instead of normalising each header again."""
    return httpx.Headers(items)


def _request(upstream: UpstreamRequest, connect: float) -> httpx.Request:
    """The `httpx.Request` of a lowered request, built from its encoded body as a ready stream.

    httpx's `content=` path normalises every header twice and adds `Host` and `Content-Length`: ~45 % of
    building a request, for headers the transport (aiohttp) derives itself from the URL and the body. A
    multipart body, whose length the lowering already put in its headers, is streamed as it is read."""
    extensions = {"timeout": _timeout(connect)}
    url = _parsed_url(upstream.url)
    kind = upstream.body_kind
    if kind == "multipart":
        return httpx.Request(
            upstream.method, url, headers=upstream.headers, content=upstream.body.stream(), extensions=extensions
        )
    body = httpx.ByteStream(upstream.json_bytes() if kind == "json" else b"")
    headers = _headers(tuple(upstream.headers.items()))
    request = httpx.Request(upstream.method, url, headers=headers, stream=body, extensions=extensions)
    request.headers.encoding = "ascii"  # str headers became bytes as ASCII, or httpx refused them: no guessing
    request.read()  # `request.content` is then the whole body, sent in one write
    return request


async def send(gw: Gateway, upstream: UpstreamRequest) -> httpx.Response:
    """The request exactly as lowered: no client-level default headers are merged in, so what
    `engine lower` and the snapshots show is what the provider receives. It waits for a slot in the
    provider's own pool, then runs under a `Watch` that bounds each later phase; the answer's body is read
    under that watch too, and closing the answer frees the slot. A failure is reported typed (`Failure`):
    `engine.attempts` decides whether it is tried again."""
    provider = upstream.candidate.provider
    timeouts = provider.spec.timeouts
    request = _request(upstream, timeouts.connect)
    pool = gw.pools[provider.id]
    if not pool.take():
        try:
            await pool.wait_for_slot(request)
        except PhaseTimeout as exc:
            raise _timed_out(upstream, exc.kind) from None
    watch = Watch(timeouts, CALLER.get(), gw.watchdog)
    watch.begin()
    try:
        response = await pool.client.send(request, stream=True)
    except BaseException as exc:
        watch.end(False)
        watch.stop()
        pool.release()
        if isinstance(exc, asyncio.CancelledError) and (timeout := watch.timed_out()) is not None:
            raise _send_failure(upstream, timeout) from None
        if isinstance(exc, httpx.TransportError):
            raise _send_failure(upstream, exc) from None
        raise
    watch.end(False)
    if response.is_closed:  # the transport handed over a body already read (a test's MockTransport does)
        watch.stop()
        pool.release()
    else:
        response.stream = WatchedStream(response.stream, watch, pool.release)
    return response


def _send_failure(upstream: UpstreamRequest, exc: httpx.TransportError) -> GatewayError:
    provider = upstream.candidate.provider.id
    if isinstance(exc, httpx.ConnectError | httpx.WriteError):
        log.warning("upstream %s unreachable: %s", provider, type(exc).__name__)
        message = f"The gateway could not reach the upstream provider `{provider}`. Retry shortly."
        return upstream_failure(502, message, "upstream_unreachable", Kind.REFUSED, sent=False)
    if isinstance(exc, httpx.TimeoutException):
        return _timed_out(upstream, _phase_of(exc, Kind.FIRST_BYTE_TIMEOUT))
    log.warning("upstream %s failed: %s", provider, type(exc).__name__)  # sent, then the connection failed
    message = f"The connection to the upstream provider `{provider}` failed. Retry shortly."
    return upstream_failure(502, message, "upstream_unreachable", Kind.DROPPED)


def _phase_of(exc: httpx.TimeoutException, default: Kind) -> Kind:
    if isinstance(exc, PhaseTimeout):
        return exc.kind
    if isinstance(exc, httpx.ConnectTimeout):
        return Kind.CONNECT_TIMEOUT
    if isinstance(exc, httpx.PoolTimeout):
        return Kind.POOL_TIMEOUT
    return default  # the transport's own read timeout


def _timed_out(upstream: UpstreamRequest, kind: Kind) -> GatewayError:
    """The 504 of one expired phase, naming it and its limit."""
    provider = upstream.candidate.provider
    phase = PHASES[kind]
    message = phase.message.format(provider=provider.id, seconds=seconds_of(provider.spec.timeouts, kind))
    return upstream_failure(phase.status, message, phase.code, kind, sent=kind not in _BEFORE_SENDING)


_BEFORE_SENDING = frozenset({Kind.POOL_TIMEOUT, Kind.CONNECT_TIMEOUT})


async def proxy(gw: Gateway, upstream: UpstreamRequest, trip: Trip, timer: Timer, renderer: Renderer) -> Response[Any]:
    """One attempt. A success is recorded in the ledger here (a stream when it ends); a failure is
    recorded by the caller, which knows whether another attempt follows."""
    headers = diagnostic_headers(gw, upstream, trip)
    trip.attempts += 1
    trip.candidate = upstream.candidate
    try:
        return await _proxy(gw, upstream, trip, timer, renderer, headers)
    except GatewayError as error:
        error.headers.update(headers)
        raise


async def _proxy(
    gw: Gateway, upstream: UpstreamRequest, trip: Trip, timer: Timer, renderer: Renderer, headers: dict[str, str]
) -> Response[Any]:
    candidate, call, wire = upstream.candidate, upstream.call, upstream.choice.wire
    sanitize = gw.sanitizers[candidate.provider.id]
    limits = gw.answer_limits[candidate.provider.id]
    began = time.perf_counter()
    response = await send(gw, upstream)
    answer = upstream.answer
    status = response.status_code
    if not 200 <= status < 300 and not 400 <= status < 600:
        timer.upstream += time.perf_counter() - began
        await response.aclose()
        raise _odd_status(candidate.provider.id, status)
    if status >= 400 or (answer == "sse" and not _is_event_stream(response)):
        try:
            raw = await _read(upstream, response, read_prefix, limits.error_bytes)
        finally:
            timer.upstream += time.perf_counter() - began
        status = status if status >= 400 else 502
        raise _upstream_error(gw, upstream, response, sanitize, status, wire.error_of(raw))

    headers.update(gw.forwarding(response.headers, sanitize))
    if answer == "sse":
        try:
            items = await _committed(gw, upstream, trip, response, sanitize, limits)
        finally:
            timer.upstream += time.perf_counter() - began
        relay = _relay(gw, upstream, trip, response, items, renderer, sanitize, limits)
        headers["cache-control"] = "no-cache"
        return StreamAnswer(batched(relay), "text/event-stream", headers, CALLER.get())
    if answer == "bytes":
        timer.upstream += time.perf_counter() - began
        for name in _BYTES_HEADERS:
            value = response.headers.get(name)
            if value is not None:
                headers[name] = value
        media_type = response.headers.get("content-type") or "application/octet-stream"
        if upstream.settle is not None:
            await upstream.settle(call, None, trip.key_id)
        return StreamAnswer(_relay_bytes(gw, upstream, trip, response), media_type, headers, CALLER.get())

    try:
        raw = await _read(upstream, response, read_decoded, limits.answer_bytes)
    finally:
        timer.upstream += time.perf_counter() - began
    try:
        doc = _decode(raw)
    except msgspec.DecodeError:
        doc = None
    del raw  # parsed: at most two copies of a large answer at once (the parsed one, then the encoded one)
    if not isinstance(doc, dict):
        raise _invalid(candidate.provider.id, "an answer that is not a JSON object")
    answers = candidate.provider.answers
    refused = answers.apply(doc) if answers is not None else None
    if refused is not None:  # a 200 the provider's spec reads as a refusal
        raise _upstream_error(gw, upstream, response, sanitize, None, refused)
    try:
        raised = wire.raise_json(doc, call)
        if not isinstance(raised, UpstreamError):
            answer_doc = _strip(gw, renderer.json(raised, call))
    except _MALFORMED as exc:
        log.warning(
            "answer from %s does not have its wire's shape: %s: %s", candidate.provider.id, type(exc).__name__, exc
        )
        raise _invalid(candidate.provider.id, "an answer that does not have the shape of its API") from None
    if isinstance(raised, UpstreamError):  # a 200 that is a refusal (a blocked prompt, a failed response)
        raise _upstream_error(gw, upstream, response, sanitize, None, raised)
    if carry_store.unwritten():
        await carry_store.flush()  # state packed into the answer's ids is stored before the client can use them
    if upstream.settle is not None:
        await upstream.settle(call, answer_doc, trip.key_id)
    row = gw.recorder.finish(trip, call.usage, 200)
    if trip.receipt and row is not None and isinstance(answer_doc, dict):
        answer_doc[gw.specs.routes.ledger.receipt_field] = receipt_of(row)
    overhead = gw.specs.routes.headers.overhead
    if overhead:
        headers[overhead] = timer.overhead_ms()
    encoded = _encode(answer_doc)
    del answer_doc, doc, raised  # the client may take long to read the answer: keep only its bytes
    return JSONAnswer(encoded, headers, idle=gw.specs.routes.gateway.answer_idle_seconds)


# What a relayed byte answer keeps of the upstream's headers (the body is relayed as it came, still encoded).
_BYTES_HEADERS = ("content-length", "content-encoding", "content-disposition")


async def _relay_bytes(
    gw: Gateway, upstream: UpstreamRequest, trip: Trip, response: httpx.Response
) -> AsyncIterator[bytes]:
    """Upstream bytes → client, chunk by chunk: memory stays at one chunk whatever the answer's size. A cut
    upstream ends the client's body short (its length no longer matches), the only signal bytes can carry."""
    candidate, call = upstream.candidate, upstream.call
    outcome = "ok"
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.TransportError as exc:
        outcome = "stream_broken"
        log.warning("byte stream from %s broke: %s", candidate.provider.id, exc)
    except (GeneratorExit, asyncio.CancelledError):
        outcome = "client_closed"
        raise
    finally:
        await response.aclose()
        gw.recorder.finish(trip, call.usage, 200, outcome)


def _upstream_error(
    gw: Gateway,
    upstream: UpstreamRequest,
    response: httpx.Response,
    sanitize: Sanitizer,
    status: int | None,
    raw: UpstreamError,
) -> GatewayError:
    """An upstream error, answered before anything reached the client: sanitized, with the upstream headers
    routes.toml forwards, and its `Failure` for the attempt policy (the status it stands for, the upstream's
    own code and retry-after). `status` None: an error reported inside a 200 answer or stream."""
    error = sanitize(status, raw)
    error.headers.update(gw.forwarding(response.headers, sanitize))
    # a 2xx that is not the protocol asked for (JSON to a stream call) is not an error the upstream reported
    kind = Kind.INVALID if status is not None and response.status_code < 400 else Kind.STATUS
    retry_after = gw.attempts.retry_after(response.headers)
    error.failure = Failure(kind, True, status or raw.status or error.status, raw.code, retry_after)
    return error


async def _committed(
    gw: Gateway,
    upstream: UpstreamRequest,
    trip: Trip,
    response: httpx.Response,
    sanitize: Sanitizer,
    limits: AnswerLimits,
) -> AsyncIterator[StreamItem | UpstreamError]:
    """The raised stream, once its first item has been seen, so the status is decided before it is sent.

    An error as the first item (a blocked prompt, a rate limit reported in the stream) becomes an HTTP error
    answer, as if the upstream had answered with that status; so does a stream that breaks before its first
    item. Only the first item is awaited: the happy path pays one `__anext__` of indirection, nothing more.
    """
    events = iter_events(iter_decoded(response, limits.answer_bytes))
    answers = upstream.candidate.provider.answers
    if answers is not None:
        events = answers.events(events)
    raised = upstream.choice.wire.raise_stream(events, upstream.call)
    search = _strip_search(gw.strip_fields)
    try:
        first = _stripped_item(gw, await anext(raised), trip, search)
    except StopAsyncIteration:
        return _stripped(gw, (), raised, trip, search)
    except AnswerRefused as refused:
        await response.aclose()
        raise _upstream_error(gw, upstream, response, sanitize, None, refused.error) from None
    except (AnswerTooLarge, UnsupportedEncoding, *_MALFORMED) as exc:
        await response.aclose()
        raise _stream_failure(upstream.candidate.provider.id, exc, limits) from None
    except httpx.TimeoutException as exc:
        await response.aclose()
        raise _timed_out(upstream, _phase_of(exc, Kind.FIRST_BYTE_TIMEOUT)) from None
    except (StreamBroken, httpx.TransportError) as exc:
        await response.aclose()
        log.warning("stream from %s broke before its first item: %s", upstream.candidate.provider.id, exc)
        message = "The upstream stream ended before sending anything. Retry shortly."
        raise upstream_failure(502, message, "upstream_stream_interrupted", Kind.DROPPED) from None
    except BaseException:
        await response.aclose()
        raise
    if isinstance(first, UpstreamError):
        if isinstance(raised, AsyncGenerator):
            await raised.aclose()
        await response.aclose()
        raise _upstream_error(gw, upstream, response, sanitize, None, first)
    return _stripped(gw, (first,), raised, trip, search)


def _is_event_stream(response: httpx.Response) -> bool:
    return str(response.headers.get("content-type", "")).startswith("text/event-stream")


# What a codec or renderer raises on a well-formed JSON object of the wrong shape (`"choices": 5`).
_MALFORMED = (TypeError, AttributeError, KeyError, ValueError, IndexError)


def _invalid(provider: str, what: str) -> GatewayError:
    message = f"The upstream provider `{provider}` sent {what}."
    return upstream_failure(502, message, "upstream_invalid_response", Kind.INVALID)


def _odd_status(provider: str, status: int) -> GatewayError:
    if 300 <= status < 400:
        return _invalid(provider, f"a redirect (HTTP {status}); the gateway does not follow upstream redirects")
    return _invalid(provider, f"HTTP status {status}, which is not an answer or an error")


def _too_large(limit: int) -> GatewayError:
    message = f"The upstream answer exceeded this gateway's limit of {limit // (1024 * 1024)} MiB and was discarded."
    return upstream_failure(502, message, "upstream_response_too_large", Kind.INVALID)


def _stream_failure(provider: str, exc: Exception, limits: AnswerLimits) -> GatewayError:
    """A stream that cannot go on: past its cap, in an encoding not asked for, or not of its wire's shape."""
    if isinstance(exc, AnswerTooLarge):
        log.warning("stream from %s passed its cap of %d bytes", provider, limits.answer_bytes)
        return _too_large(limits.answer_bytes)
    if isinstance(exc, UnsupportedEncoding):
        return _invalid(provider, str(exc))
    log.warning("stream from %s does not have its wire's shape: %s: %s", provider, type(exc).__name__, exc)
    return _invalid(provider, "a stream event that does not have the shape of its API")


async def _read(
    upstream: UpstreamRequest,
    response: httpx.Response,
    reader: Callable[[httpx.Response, int], Awaitable[bytes]],
    limit: int,
) -> bytes:
    try:
        return await reader(response, limit)
    except AnswerTooLarge:
        raise _too_large(limit) from None
    except UnsupportedEncoding as exc:
        raise _invalid(upstream.candidate.provider.id, str(exc)) from None
    except httpx.TimeoutException as exc:
        raise _timed_out(upstream, _phase_of(exc, Kind.IDLE_TIMEOUT)) from None
    except httpx.TransportError:
        message = "The upstream connection failed mid-response. Retry shortly."
        raise upstream_failure(502, message, "upstream_unreachable", Kind.DROPPED) from None
    finally:
        await response.aclose()


@functools.lru_cache(maxsize=16)
def _strip_search(fields: frozenset[str]) -> Callable[[bytes], object]:
    """One search per chunk for any stripped field's key; a pattern that never matches when none is stripped."""
    return re.compile(b"|".join(re.escape(f'"{f}"'.encode()) for f in sorted(fields)) or b"(?!)").search


def _stripped_item(
    gw: Gateway, item: StreamItem | UpstreamError, trip: Trip, search: Callable[[bytes], object]
) -> StreamItem | UpstreamError:
    """One raised item without the fields routes.toml strips (untouched chunks keep their bytes), counted:
    the ledger's estimate should the stream be cut short."""
    trip.chunks += 1
    if isinstance(item, UpstreamError):
        trip.stream_error = True
    elif isinstance(item, bytes) and search(item):
        item = _strip(gw, _decode(item))
    elif isinstance(item, dict):
        item = _strip(gw, item)
    return item


async def _stripped(
    gw: Gateway,
    first: tuple[StreamItem | UpstreamError, ...],
    rest: AsyncIterator[StreamItem | UpstreamError],
    trip: Trip,
    search: Callable[[bytes], object],
) -> AsyncGenerator[StreamItem | UpstreamError]:
    """The raised stream as relayed: its first item (already seen by `_committed`), then the rest, each
    `_stripped_item`; then the request's carried state is stored (`engine.carry_store`), before the stream's
    last frame reaches the client, so that the client's next turn finds the state it refers to. One
    generator for what were three layers, each paid on every event."""
    for item in first:
        yield item
    async for item in rest:
        yield _stripped_item(gw, item, trip, search)
    if carry_store.unwritten():
        await carry_store.flush()


async def _relay(
    gw: Gateway,
    upstream: UpstreamRequest,
    trip: Trip,
    response: httpx.Response,
    items: AsyncIterator[StreamItem | UpstreamError],
    renderer: Renderer,
    sanitize: Sanitize,
    limits: AnswerLimits,
) -> AsyncIterator[bytes]:
    """Raised items → client SSE, in the client's shape. After content has gone out, an upstream error, a cut
    stream, or one past its cap or of the wrong shape ends it with one OpenAI-shaped error event (the status
    is already committed). On a route that asks for receipts, one last `event: <receipt_field>` carries it."""
    candidate, call = upstream.candidate, upstream.call
    outcome = "ok"
    try:
        async for frame_bytes in renderer.frames(items, call, sanitize):
            yield frame_bytes
    except AnswerRefused as refused:  # a refusal after content went out: one error event ends the stream
        yield renderer.broken(sanitize(None, refused.error))
    except httpx.TimeoutException as exc:
        outcome = "timeout"
        log.warning("stream from %s timed out: %s", candidate.provider.id, exc)
        yield renderer.broken(_timed_out(upstream, _phase_of(exc, Kind.IDLE_TIMEOUT)))
    except (StreamBroken, httpx.TransportError) as exc:
        outcome = "stream_broken"
        log.warning("stream from %s broke: %s", candidate.provider.id, exc)
        message = "The upstream stream ended unexpectedly; the answer is incomplete."
        yield renderer.broken(upstream_failure(502, message, "upstream_stream_interrupted", Kind.DROPPED))
    except (GeneratorExit, asyncio.CancelledError):
        outcome = "client_closed"  # the client hung up: record what was relayed until then
        raise
    except (AnswerTooLarge, UnsupportedEncoding, *_MALFORMED) as exc:
        yield renderer.broken(_stream_failure(candidate.provider.id, exc, limits))
    finally:
        await response.aclose()
        row = gw.recorder.finish(trip, call.usage, 200, outcome)
    if trip.receipt and row is not None:  # after the answer's own end: clients that stop there lose nothing
        field = gw.specs.routes.ledger.receipt_field
        yield b"event: " + field.encode() + b"\ndata: " + _encode({field: receipt_of(row)}) + b"\n\n"
