"""Send: the httpx request a provider receives is exactly the lowered one, a request waiting on its upstream
holds its body once, and an answer's headers read the same whatever the transport skipped to build them quickly."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import httpx
import msgspec
from aiohttp import web

from engine.catalog import Catalog
from engine.lower import UpstreamRequest, lower_request
from engine.proxy import _request
from engine.select import select_wire
from engine.spec.loader import load_specs
from engine.transport import AiohttpTransport
from tests.conftest import SPECS
from tests.inprocess import InProcess, ok

CATALOG = Catalog.from_specs(load_specs(SPECS), env={"OPENAI_API_KEY": "sk-test"})


def lowered_hello() -> UpstreamRequest:
    candidate = CATALOG.all_candidates("openai/gpt-4.1")[0]
    body = {"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
    return lower_request(candidate, body, select_wire(candidate, body, "chat.completions"), "chat.completions")


def test_the_request_carries_the_lowered_headers_and_body_and_nothing_else() -> None:
    upstream = lowered_hello()
    lowered = msgspec.json.encode(upstream.body)
    request = _request(upstream, connect=3.0)
    assert request.method == upstream.method
    assert str(request.url) == upstream.url
    assert dict(request.headers) == upstream.headers, "no Host or Content-Length of httpx's own"
    assert request.content == lowered
    assert request.extensions["timeout"]["connect"] == 3.0


def test_a_sent_request_holds_its_body_once_as_bytes_and_a_retry_sends_the_same() -> None:
    """While the upstream answers (seconds, for a model), the lowered object is not kept beside its bytes."""
    upstream = lowered_hello()
    lowered = msgspec.json.encode(upstream.body)
    first = _request(upstream, connect=3.0)
    assert upstream.body is None
    retry = _request(upstream, connect=3.0)
    assert first.content == retry.content == lowered


def test_a_request_waiting_on_its_upstream_holds_its_body_once(gw: InProcess) -> None:
    """A model answers in seconds, a long one in minutes: meanwhile the gateway keeps the bytes it sent and
    neither the parsed body nor the lowered object (`openai/gpt-4.1` has one provider: no fallback needs them)."""
    text = "x" * 2_000_000
    raw = msgspec.json.encode({"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": text}]})
    held: list[int] = []

    async def measure(request: httpx.Request) -> httpx.Response:
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0])
        return await ok()(request)

    gw.upstreams.script("openai", measure)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        response = gw.post("/external/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    # The sent bytes are 2 MB in a buffer msgspec grew by half again (3 MB traced); a parsed copy is 2 MB more.
    assert 2_000_000 < held[0] - before < 4_000_000, "the sent bytes, and no parsed copy beside them"


def test_an_answers_headers_read_alike_in_ascii_and_not() -> None:
    """The transport tells httpx the headers are ASCII when they are; when not, httpx still guesses."""

    async def answer(request: web.Request) -> web.Response:
        plain = request.path == "/plain"
        note = "plain" if plain else "caf\u00e9"
        return web.Response(body=b"{}", headers={"x-note": note, "content-type": "application/json"})

    async def run() -> dict[str, str]:
        app = web.Application()
        app.router.add_get("/{kind}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        transport = AiohttpTransport()
        try:
            seen = {}
            for kind in ("plain", "accented"):
                request = httpx.Request("GET", f"http://127.0.0.1:{port}/{kind}")
                response = await transport.handle_async_request(request)
                seen[kind] = response.headers["x-note"]
                await response.aclose()
            return seen
        finally:
            await transport.aclose()
            await runner.cleanup()

    assert asyncio.run(run()) == {"plain": "plain", "accented": "caf\u00e9"}
