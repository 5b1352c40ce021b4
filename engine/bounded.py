"""Read an upstream answer without trusting its size: decoded here, counted, and cut off at a cap.

The gateway asks upstreams only for the encodings it can inflate incrementally (`ACCEPT_ENCODING`), and
inflates them itself, at most `limit` bytes at a time, instead of letting httpx decode whole chunks: a 2 MB
gzip body that inflates to 2 GiB is refused after `limit` bytes, with nothing else held in memory. The
caps are spec data (`routes.toml` `[upstream]`, overridden per provider by `provider.max_answer_mb`).
An identity body costs one length check per chunk.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import httpx

# What the gateway can inflate with a bound; anything else an upstream sends is refused, not inflated.
ACCEPT_ENCODING = "gzip, deflate"


class AnswerTooLarge(Exception):
    """The decoded answer passed its cap; the rest was not read."""


class UnsupportedEncoding(Exception):
    """The upstream encoded its answer in a way the gateway did not ask for and cannot bound."""


@dataclass(frozen=True)
class AnswerLimits:
    """What the gateway reads from one provider's answers, at most (bytes and characters)."""

    answer_bytes: int  # a whole answer, decoded (a JSON body, or every event of a stream)
    error_bytes: int  # an error body: the rest is discarded, not relayed
    message_chars: int  # an upstream error message, as the client sees it


class _Inflate:
    """Incremental gzip/deflate decoding that never produces more than it is allowed to."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding == "gzip"
        self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS)
        self._first = True

    def feed(self, data: bytes, allowed: int) -> bytes:
        """Up to `allowed` + 1 bytes of output for `data` (one more than allowed means: over the cap)."""
        out = bytearray()
        while data and len(out) <= allowed:
            try:
                out += self._decoder.decompress(data, allowed + 1 - len(out))
            except zlib.error:
                if self._first and not self._gzip:  # `deflate` sent raw, without its zlib header
                    self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._first = False
                    continue
                raise UnsupportedEncoding("a body that is not valid gzip or deflate") from None
            self._first = False
            data = self._decoder.unconsumed_tail
            if self._decoder.eof and self._decoder.unused_data:  # concatenated gzip members
                data = self._decoder.unused_data
                self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
        return bytes(out)


def _decoder(response: httpx.Response) -> _Inflate | None:
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflate("gzip" if encoding != "deflate" else "deflate")
    raise UnsupportedEncoding(f"an answer in content-encoding {encoding!r}, which the gateway did not ask for")


def _raw(response: httpx.Response) -> AsyncIterable[bytes]:
    """The answer's bytes as they arrive: its transport's stream itself, without `Response.aiter_raw`'s layers
    (a re-chunker and a request context around every read, two generators deep). The caller closes the
    response, which closes the stream."""
    if response.is_stream_consumed:  # built in memory (httpx reads such bodies, decoded, at construction)
        return _held(response.content)
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("an upstream answer must be read from an async stream")
    return stream


async def _held(content: bytes) -> AsyncIterator[bytes]:
    yield content


def _decoder_of(response: httpx.Response) -> _Inflate | None:
    return None if response.is_stream_consumed else _decoder(response)


async def iter_decoded(response: httpx.Response, limit: int) -> AsyncIterator[bytes]:
    """The answer's decoded bytes, chunk by chunk; `AnswerTooLarge` once more than `limit` arrived."""
    decoder = _decoder_of(response)
    seen = 0
    async for raw in _raw(response):
        chunk = raw if decoder is None else decoder.feed(raw, limit - seen)
        seen += len(chunk)
        if seen > limit:
            raise AnswerTooLarge(f"more than {limit} bytes")
        if chunk:
            yield chunk


async def read_decoded(response: httpx.Response, limit: int) -> bytes:
    """The whole decoded answer; `AnswerTooLarge` past `limit`. The caller closes the response.
    (`iter_decoded`'s loop, without a generator around it: a JSON answer is most often one read, returned as it
    came.) Later reads are appended to one buffer as they arrive, never kept as a list of reads: a large answer
    is then one large block, which goes back to the OS when freed (`engine.memory`), where thousands of reads
    freed together would leave the heap holding them."""
    decoder = _decoder_of(response)
    first = b""
    buffer: bytearray | None = None
    seen = 0
    async for raw in _raw(response):
        chunk = raw if decoder is None else decoder.feed(raw, limit - seen)
        seen += len(chunk)
        if seen > limit:
            raise AnswerTooLarge(f"more than {limit} bytes")
        if buffer is not None:
            buffer += chunk
        elif not first:
            first = chunk
        else:
            buffer = bytearray(first)
            buffer += chunk
            first = b""
    return first if buffer is None else bytes(buffer)


async def read_prefix(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` decoded bytes of the answer; the rest is never read. For error bodies, whose
    text only ever becomes a (truncated) message. An undecodable body reads as empty."""
    try:
        decoder = _decoder_of(response)
        out = bytearray()
        async for raw in _raw(response):
            out += raw if decoder is None else decoder.feed(raw, limit - len(out))
            if len(out) >= limit:
                break
    except UnsupportedEncoding:
        return b""
    return bytes(out[:limit])
