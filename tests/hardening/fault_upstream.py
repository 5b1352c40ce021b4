"""A loopback upstream that misbehaves on command, to probe what the gateway does with a broken or hostile
provider. It speaks raw HTTP/1.1 over asyncio (no framework), so it can do what a well-behaved server
library would refuse to: odd status lines, resets, gzip bombs, half-sent answers.

The fault is the upstream model name, so one server serves every probe at once: `faulty.toml` maps the
public ID `faulty/<fault>` to the upstream model `<fault>`. Unknown names answer like OpenAI would (the
`ok` fault). Secrets the leak audit looks for are in `SECRETS`; they must never reach a client.

`GET /_faults` answers when the gateway last hung up on each fault mid-answer (`{"cancelled": {fault: time}}`).

Run it alone with `python -m tests.hardening.fault_upstream --port 9200 [--bomb-mb 2048]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from tests.fakes.openai_fake import completion, response_events, response_object, stream_chunks

PROVIDER_KEY = "sk-fault-PROVIDERSECRET-9f8e7d6c5b4a"
SECRETS = {"key": PROVIDER_KEY}  # filled in with the server's own URL and host at start-up
CHUNK = 1 << 20
BIG_PADDING = b"p" * (10 * CHUNK)


def _status_line(status: int, reason: str = "") -> bytes:
    return f"HTTP/1.1 {status} {reason or 'Whatever'}\r\n".encode()


def _head(status: int, headers: dict[str, str], reason: str = "") -> bytes:
    lines = [_status_line(status, reason)] + [f"{k}: {v}\r\n".encode() for k, v in headers.items()]
    return b"".join(lines) + b"\r\n"


def _gzip_bomb(decoded_mb: int) -> bytes:
    """One gzip member that inflates to `decoded_mb` MiB of zeros (~1 KB per MiB compressed). Built from one
    compressed MiB repeated: a full flush resets the compressor, so every MiB compresses to the same bytes."""
    zeros = bytes(CHUNK)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(decoded_mb):
        crc = zlib.crc32(zeros, crc)
    size = (decoded_mb * CHUNK) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + block * decoded_mb + compressor.flush() + struct.pack("<II", crc, size)


class Faults:
    def __init__(self, bomb_mb: int) -> None:
        self.bomb_mb = bomb_mb
        self._bomb: bytes | None = None
        self.started = 0  # answers begun, per fault (for the disconnect probes)
        self.cancelled: dict[str, float] = {}  # fault → when (time.time()) the gateway last hung up mid-answer
        self.began: dict[str, float] = {}

    @property
    def bomb(self) -> bytes:
        if self._bomb is None:
            self._bomb = _gzip_bomb(self.bomb_mb)
        return self._bomb

    def leaky(self) -> dict[str, Any]:
        """An error body with a secret in every field."""
        url, host, key = SECRETS["url"], SECRETS["host"], SECRETS["key"]
        return {
            "error": {
                "message": f"upstream {url} rejected {key.upper()} ({key[3:]}) at localhost:8443 and {host.upper()}",
                "type": key,
                "code": url,
                "param": host,
            }
        }


async def _send_json(
    writer: asyncio.StreamWriter, status: int, doc: Any, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(doc).encode()
    writer.write(
        _head(status, {"content-type": "application/json", "content-length": str(len(body)), **(headers or {})})
    )
    writer.write(body)
    await writer.drain()


async def _send_sse(writer: asyncio.StreamWriter, events: list[str], delay: float = 0.0) -> None:
    writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
    for data in events:
        frame = (data if data.startswith("event:") else "data: " + data).encode() + b"\n\n"
        writer.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
        await writer.drain()
        if delay:
            await asyncio.sleep(delay)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def _chat_events(body: dict[str, Any]) -> list[str]:
    return [json.dumps(c) for c in stream_chunks(body)] + ["[DONE]"]


async def answer(
    faults: Faults, path: str, body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    fault = str(body.get("model", "ok"))
    responses = path.endswith("/responses")
    stream = bool(body.get("stream"))
    loop = asyncio.get_running_loop()
    faults.began[fault] = loop.time()
    good: Any = response_object(body) if responses else completion(body)

    async def ok() -> None:
        if stream:
            await _send_sse(writer, response_events(body) if responses else _chat_events(body))
        else:
            await _send_json(writer, 200, good)

    async def reset() -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def hang_headers() -> None:
        await asyncio.sleep(3600)

    async def hang_stream() -> None:
        writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
        first = _chat_events(body)[0]
        frame = b"data: " + first.encode() + b"\n\n"
        writer.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
        await writer.drain()
        await asyncio.sleep(3600)

    async def trickle() -> None:
        raw = json.dumps(good).encode()
        writer.write(_head(200, {"content-type": "application/json", "content-length": str(len(raw))}))
        for i in range(0, len(raw), 64):
            writer.write(raw[i : i + 64])
            await writer.drain()
            await asyncio.sleep(0.01)

    async def malformed_json() -> None:
        raw = b'{"id": "chatcmpl-x", "choices": [{'
        writer.write(_head(200, {"content-type": "application/json", "content-length": str(len(raw))}) + raw)

    async def non_object() -> None:
        await _send_json(writer, 200, [1, 2, 3])

    async def wrong_shape() -> None:
        await _send_json(writer, 200, {"choices": 5, "output": "x", "usage": []})

    async def wrong_content_type() -> None:
        raw = b"<html><body>Gateway Timeout</body></html>"
        writer.write(_head(200, {"content-type": "text/html", "content-length": str(len(raw))}) + raw)

    async def gzip() -> None:
        raw = zlib.compress(json.dumps(good).encode(), wbits=zlib.MAX_WBITS | 16)
        headers = {"content-type": "application/json", "content-encoding": "gzip", "content-length": str(len(raw))}
        writer.write(_head(200, headers) + raw)

    async def brotli() -> None:
        raw = b"\x1b\x03\x00\xf8\xa5\x02\x00"  # not asked for: must be refused, never inflated
        headers = {"content-type": "application/json", "content-encoding": "br", "content-length": str(len(raw))}
        writer.write(_head(200, headers) + raw)

    async def gzip_bomb() -> None:
        bomb = faults.bomb
        content_type = "text/event-stream" if stream else "application/json"
        headers = {"content-type": content_type, "content-encoding": "gzip", "content-length": str(len(bomb))}
        writer.write(_head(200, headers))
        for i in range(0, len(bomb), CHUNK):
            writer.write(bomb[i : i + CHUNK])
            await writer.drain()

    async def error_10mb() -> None:
        await _send_json(writer, 500, {"error": {"message": "x" * (10 * CHUNK), "type": "server_error"}})

    async def big_json() -> None:  # a valid 10 MiB answer, for clients that never read (built fast: 50 at once)
        raw = json.dumps(good).encode()[:-1] + b', "padding": "' + BIG_PADDING + b'"}'
        writer.write(_head(200, {"content-type": "application/json", "content-length": str(len(raw))}))
        writer.write(raw)
        await writer.drain()

    async def big_stream() -> None:  # a long stream, for clients that leave mid-call
        chunk = json.dumps(stream_chunks({**body, "stream_options": {}})[1])
        try:
            await _send_sse(writer, [chunk] * 200_000, delay=0.001)
        except (ConnectionError, asyncio.CancelledError):
            faults.cancelled[fault] = time.time()
            raise

    async def flood_stream() -> None:  # 400 MB as fast as it is read, for clients that stop reading
        chunk = stream_chunks({**body, "stream_options": {}})[1]
        chunk["choices"][0]["delta"]["content"] = "x" * 4000
        try:
            await _send_sse(writer, [json.dumps(chunk)] * 100_000)
        except (ConnectionError, asyncio.CancelledError):
            faults.cancelled[fault] = time.time()
            raise

    async def slow_json() -> None:  # answers after 30 s, unless the gateway hangs up first (JSON)
        try:
            if await asyncio.wait_for(reader.read(1), 30) == b"":
                faults.cancelled[fault] = time.time()
                return
        except (TimeoutError, ConnectionError):
            pass
        await _send_json(writer, 200, good)

    async def redirect() -> None:
        await _send_json(writer, 302, good, {"location": SECRETS["url"] + "/elsewhere"})

    async def leak500_fields() -> None:
        headers = {"x-ratelimit-limit-requests": f"100; key={PROVIDER_KEY}", "retry-after": SECRETS["host"]}
        await _send_json(writer, 500, faults.leaky(), headers)

    async def leak400_fields() -> None:
        await _send_json(writer, 400, faults.leaky(), {"x-ratelimit-remaining-tokens": PROVIDER_KEY.upper()})

    async def traceback() -> None:
        text = (
            'Traceback (most recent call last):\n  File "/srv/app/handler.py", line 42, in handle\n'
            "    raise KeyError(key)\nKeyError: 'model'"
        )
        await _send_json(writer, 500, {"error": {"message": text, "type": "server_error"}})

    async def status_999() -> None:
        await _send_json(writer, 999, good)

    async def status_204() -> None:
        writer.write(_head(204, {}))

    async def bad_sequence() -> None:  # /responses: a malformed sequence number after two good events
        events = response_events(body)[:2]
        events.append(
            'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":"x"}'
        )
        events += response_events(body)[3:]
        await _send_sse(writer, events)

    async def stream_garbage() -> None:
        await _send_sse(writer, [_chat_events(body)[0], "{not json", "[DONE]"])

    handlers: dict[str, Callable[[], Awaitable[None]]] = {
        name: fn for name, fn in locals().items() if callable(fn) and name not in ("faults", "reader", "writer", "loop")
    }
    await handlers.get(fault, ok)()


async def handle(faults: Faults, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            path = request_line.split(" ")[1]
            if path == "/_faults":  # the probes' view of what the upstream saw (bench/probe.py disconnect)
                await _send_json(writer, 200, {"cancelled": faults.cancelled})
                continue
            body = json.loads(raw) if raw else {}
            await answer(faults, path, body if isinstance(body, dict) else {}, reader, writer)
            if writer.transport.is_closing():
                return
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(host: str, port: int, bomb_mb: int) -> None:
    faults = Faults(bomb_mb)
    assert faults.bomb  # built before the port opens, so the first bomb is not slowed by building it
    SECRETS.update(url=f"http://{host}:{port}/v1", host=f"{host}:{port}")
    server = await asyncio.start_server(lambda r, w: handle(faults, r, w), host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--bomb-mb", type=int, default=256, help="decoded size of the gzip bomb, MiB")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.bomb_mb))


if __name__ == "__main__":
    main()
