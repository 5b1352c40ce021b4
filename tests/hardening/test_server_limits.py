"""The HTTP server's own bounds (routes.toml `[server]`, `engine/server.py`), through a real `engine serve`.

Raw sockets, since these requests are ones an HTTP client refuses to send: heads too large or with too many
fields (431), bytes that are not HTTP (400), heads and bodies sent too slowly (408, slowloris), one
connection too many (503). Every answer is OpenAI's four-key error with `content-type: application/json`;
the bounds are the gateway's routes.toml, lowered here so the tests are quick and show they are data.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from engine.spec.models import ServerLimits
from tests.servers import Gateway, run_gateway

# The shipped line → this gateway's: small, quick bounds.
OVERRIDES = {
    "max_header_kb = 64": "max_header_kb = 16",
    "max_headers = 100": "max_headers = 40",
    "header_timeout_seconds = 10.0": "header_timeout_seconds = 1.0",
    "body_timeout_seconds = 120.0": "body_timeout_seconds = 1.0",
    "max_connections = 1000": "max_connections = 240",
}
SLACK = 2.5  # seconds a bound may be late by on a loaded 2-core machine
# ... and the fraction of it a bound may come early by: uvloop reads its clock once per loop iteration, so a
# timer armed late in a long iteration (200 connections accepted at once, on a busy machine) starts early.
EARLY = 0.5
MODELS = "/external/v1/models"
CHAT = "/external/v1/chat/completions"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with run_gateway(tmp_path_factory.mktemp("server"), {}, routes_overrides=OVERRIDES) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def bound(gateway: Gateway) -> ServerLimits:
    """The bounds as the gateway read them: its routes.toml's `[server]` table."""
    routes = tomllib.loads((Path(gateway.env["ENGINE_SPECS"]) / "routes.toml").read_text())
    return ServerLimits.model_validate(routes["server"])


def port_of(gateway: Gateway) -> int:
    return int(gateway.root.rsplit(":", 1)[1])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from connecting to the connection's end

    def error(self) -> dict[str, Any]:
        """The OpenAI-shaped error object this answer carries (asserting the shape)."""
        assert self.headers.get("content-type") == "application/json", self.headers
        payload = msgspec.json.decode(self.body)
        assert set(payload) == {"error"}, payload
        error: dict[str, Any] = payload["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        return error


def parse(raw: bytes, seconds: float) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return Answer(int(lines[0].split()[1]), headers, body, seconds)


def exchange(gateway: Gateway, request: bytes, timeout: float = 15.0) -> Answer:
    """Send `request` as it is, then read until the gateway closes the connection."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the gateway may answer first
            sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return parse(b"".join(chunks), time.monotonic() - start)


def get(path: str, *headers: bytes, method: bytes = b"GET") -> bytes:
    lines = [method + b" " + path.encode() + b" HTTP/1.1", b"host: gateway", *headers, b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


# ---------------------------------------------------------------- 431: heads too large or with too many fields


def test_a_4_mib_header_is_a_431_as_soon_as_the_bound_is_read(gateway: Gateway, bound: ServerLimits) -> None:
    answer = exchange(gateway, get("/nope", b"x-big: " + b"a" * (4 << 20)))
    assert answer.status == 431
    error = answer.error()
    assert error["code"] == "request_headers_too_large"
    assert error["type"] == "invalid_request_error"
    assert f"more than {bound.max_header_kb} KiB" in error["message"]
    assert answer.headers["connection"] == "close"


def test_20000_headers_are_a_431_naming_the_field_bound(gateway: Gateway, bound: ServerLimits) -> None:
    answer = exchange(gateway, get("/nope", *(b"x-h%d: v" % i for i in range(20_000))))
    assert answer.status == 431
    assert f"more than {bound.max_headers} header fields" in answer.error()["message"]


def test_a_head_at_the_bounds_is_served_and_one_past_them_is_not(gateway: Gateway, bound: ServerLimits) -> None:
    """The bounds are exactly routes.toml's: `max_headers` fields pass, one more does not; a head just under
    `max_header_kb` passes, one just over does not."""
    fields = [b"x-h%d: v" % i for i in range(bound.max_headers - 2)]  # with host and connection: the bound
    assert exchange(gateway, get("/nope", *fields)).status == 404
    assert exchange(gateway, get("/nope", *fields, b"x-one-more: v")).status == 431
    size = bound.max_header_kb * 1024
    assert exchange(gateway, get("/nope", b"x-big: " + b"a" * (size - 200))).status == 404
    assert exchange(gateway, get("/nope", b"x-big: " + b"a" * size)).status == 431


def test_an_unknown_path_is_a_404_in_openai_shape_also_for_head(gateway: Gateway) -> None:
    """A HEAD answer has no body, but the same status and headers as the GET: JSON's type and length."""
    got = exchange(gateway, get("/nope"))
    head = exchange(gateway, get("/nope", method=b"HEAD"))
    assert got.status == head.status == 404
    assert got.error()["code"] == "unknown_url"
    assert head.body == b""
    assert head.headers["content-type"] == "application/json"
    assert int(head.headers["content-length"]) == len(got.body) + 1  # the message names the method: HEAD


# ---------------------------------------------------------------- 400: not HTTP


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /nope HTTP/9.9 extra\r\n\r\n",
        b"GET /nope HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET /café HTTP/1.1\r\nhost: x\r\n\r\n".encode(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS to the plain-HTTP port
    ],
    ids=["method", "request-line", "header-line", "url", "tls"],
)
def test_bytes_that_are_not_http_are_a_400_in_openai_shape(gateway: Gateway, request_bytes: bytes) -> None:
    answer = exchange(gateway, request_bytes)
    assert answer.status == 400
    error = answer.error()
    assert error["code"] == "invalid_http_request"
    assert error["message"].startswith("The request is not valid HTTP/1.1 (")


# ---------------------------------------------------------------- 408: too slow


async def _trickle(port: int, data: bytes, every: float, limit: float) -> tuple[float, bytes]:
    """Connect, then send `data` a byte at a time until the gateway ends the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return await _trickle_on(reader, writer, data, every, limit)


async def _trickle_on(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, every: float, limit: float
) -> tuple[float, bytes]:
    """Send `data` a byte at a time every `every` s; the gateway's answer once it ends the connection (empty:
    closed without one), and how long that took."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def drip() -> None:
        for byte in data:
            writer.write(bytes([byte]))
            await asyncio.sleep(every)

    dripping = asyncio.create_task(drip())
    try:
        answer = await asyncio.wait_for(reader.read(), limit)
    except ConnectionResetError:
        answer = b""
    finally:
        dripping.cancel()
        writer.close()
    return loop.time() - start, answer


def test_slowloris_connections_each_get_a_408_and_others_are_served_meanwhile(
    gateway: Gateway, bound: ServerLimits
) -> None:
    slow_head = get("/nope", b"x-slow: " + b"a" * 1000)
    n = 200

    async def run() -> tuple[list[tuple[float, bytes]], float, int]:
        port = port_of(gateway)
        limit = bound.header_timeout_seconds + SLACK
        slow = [asyncio.create_task(_trickle(port, slow_head, 0.05, limit)) for _ in range(n)]
        await asyncio.sleep(0.3)  # every slow connection open and dripping
        async with httpx.AsyncClient(base_url=gateway.root, timeout=limit) as client:
            start = time.monotonic()
            normal = await client.get(MODELS, headers={"authorization": f"Bearer {gateway.key}"})
            served = time.monotonic() - start
        return await asyncio.gather(*slow), served, normal.status_code

    slow, served, status = asyncio.run(run())
    assert status == 200
    assert served < 1.0, f"a normal request took {served:.2f} s beside {n} slow ones"
    late = [seconds for seconds, _ in slow if seconds > bound.header_timeout_seconds + SLACK]
    assert not late, f"{len(late)} of {n} slow connections outlived the bound"
    answers = [parse(raw, seconds) for seconds, raw in slow if raw]
    assert len(answers) >= n * 0.9, f"only {len(answers)} of {n} slow connections were answered"
    early = [(round(seconds, 2), raw[:120]) for seconds, raw in slow if seconds < bound.header_timeout_seconds * EARLY]
    assert not early, f"{len(early)} slow connections ended before the bound: {early[:5]}"
    for answer in answers:
        assert answer.status == 408
        assert answer.error()["code"] == "request_timeout"
        assert "headers did not arrive" in answer.error()["message"]


def test_a_connection_that_sends_nothing_gets_a_408(gateway: Gateway, bound: ServerLimits) -> None:
    answer = exchange(gateway, b"")
    assert answer.status == 408
    assert bound.header_timeout_seconds * EARLY <= answer.seconds <= bound.header_timeout_seconds + SLACK


def test_a_kept_alive_connections_next_head_is_bounded_too(gateway: Gateway, bound: ServerLimits) -> None:
    """After a first answer the connection is kept alive; its next head, begun but not finished, is a 408
    (the keep-alive timeout only bounds a connection that sends nothing)."""
    first = b"GET /nope HTTP/1.1\r\nhost: gateway\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=15) as sock:
        sock.sendall(first)
        raw = b""
        while raw.count(b"unknown_url") < 1:
            raw += sock.recv(65536)
        start = time.monotonic()
        sock.sendall(b"GET /nope HTTP/1.1\r\nhost: ")
        while chunk := sock.recv(65536):
            raw += chunk
        seconds = time.monotonic() - start
    second = parse(raw[raw.index(b"HTTP/1.1 408") :], seconds)
    assert second.status == 408
    assert bound.header_timeout_seconds * EARLY <= seconds <= bound.header_timeout_seconds + SLACK


def test_a_body_trickled_slower_than_the_bound_is_a_408(gateway: Gateway, bound: ServerLimits) -> None:
    body = b'{"model": "openai/gpt-4.1", "messages": []}'
    head = (
        f"POST {CHAT} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {gateway.key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()

    async def run() -> tuple[float, bytes]:
        port = port_of(gateway)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)  # the head at once: only the body is slow
        return await _trickle_on(reader, writer, body, 0.1, bound.body_timeout_seconds + SLACK)

    seconds, raw = asyncio.run(run())
    answer = parse(raw, seconds)
    assert answer.status == 408
    assert "body did not arrive" in answer.error()["message"]
    assert bound.body_timeout_seconds * EARLY <= seconds <= bound.body_timeout_seconds + SLACK


def test_a_body_in_time_is_not_cut_off(gateway: Gateway, bound: ServerLimits) -> None:
    """The body bound is a deadline for the whole body: one sent within it reaches the gateway (here: a 400
    for its empty messages, from validation, which reads the whole body)."""
    body = b'{"model": "openai/gpt-4.1", "messages": []}'
    head = (
        f"POST {CHAT} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {gateway.key}\r\nconnection: close\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()

    async def run() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway))
        writer.write(head)
        every = bound.body_timeout_seconds / len(body) / 3  # the body in a third of the bound
        return await _trickle_on(reader, writer, body, every, bound.body_timeout_seconds + SLACK)

    seconds, raw = asyncio.run(run())
    answer = parse(raw, seconds)
    assert answer.status == 400, raw
    assert answer.error()["code"] != "request_timeout"


# ---------------------------------------------------------------- at the connection cap


def _hold(gateway: Gateway, n: int, send: bytes, answered: bool) -> list[socket.socket]:
    """`n` connections that each sent `send`; with `answered`, each has read its answer (kept alive)."""
    held = [socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=15) for _ in range(n)]
    for sock in held:
        sock.sendall(send)
    for sock in held if answered else ():
        raw = b""
        while not raw.endswith(b"}}"):
            raw += sock.recv(65536)
    return held


def test_at_the_cap_the_longest_unfinished_head_makes_room(gateway: Gateway, bound: ServerLimits) -> None:
    """A slowloris filling `max_connections` does not lock clients out: a new connection ends the one that
    has waited longest for its head (with a 408 saying why), and is served."""
    assert bound.max_connections is not None
    partial = b"GET /nope HTTP/1.1\r\nhost: "
    held = _hold(gateway, 1, partial, answered=False)
    time.sleep(0.2)  # the first is the one that has waited longest (the others open within one loop tick)
    held += _hold(gateway, bound.max_connections - 1, partial, answered=False)
    try:
        answer = exchange(gateway, get("/nope"))
        oldest = held[0].recv(65536)
    finally:
        for sock in held:
            sock.close()
    assert answer.status == 404
    evicted = parse(oldest, 0)
    assert evicted.status == 408
    assert "needed room for another" in evicted.error()["message"]


def test_one_connection_past_the_cap_of_busy_ones_is_a_503_with_retry_after(
    gateway: Gateway, bound: ServerLimits
) -> None:
    """When every connection is kept alive between requests (none is waiting for a head), there is no
    room to make: the new one gets a 503 and is told when to retry."""
    assert bound.max_connections is not None
    held = _hold(gateway, bound.max_connections, b"GET /nope HTTP/1.1\r\nhost: gateway\r\n\r\n", answered=True)
    try:
        answer = exchange(gateway, get("/nope"))
    finally:
        for sock in held:
            sock.close()
    assert answer.status == 503
    assert answer.headers["retry-after"] == "1"
    error = answer.error()
    assert error["code"] == "too_many_connections"
    assert error["type"] == "api_error"
    time.sleep(0.5)  # the held connections are let go: the next one is served
    assert exchange(gateway, get("/nope")).status == 404
