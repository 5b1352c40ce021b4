"""Send: the httpx request a provider receives is exactly the lowered one, and an answer's headers read the
same whatever the transport skipped to build them quickly."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
from aiohttp import web

from engine.catalog import Catalog
from engine.lower import lower_request
from engine.proxy import _request
from engine.select import select_wire
from engine.spec.loader import load_specs
from engine.transport import AiohttpTransport
from tests.conftest import SPECS

CATALOG = Catalog.from_specs(load_specs(SPECS), env={"OPENAI_API_KEY": "sk-test"})


def test_the_request_carries_the_lowered_headers_and_body_and_nothing_else() -> None:
    candidate = CATALOG.all_candidates("openai/gpt-4.1")[0]
    body = {"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
    upstream = lower_request(candidate, body, select_wire(candidate, body, "chat.completions"), "chat.completions")
    request = _request(upstream, connect=3.0)
    assert request.method == upstream.method
    assert str(request.url) == upstream.url
    assert dict(request.headers) == upstream.headers, "no Host or Content-Length of httpx's own"
    assert request.content == msgspec.json.encode(upstream.body)
    assert request.extensions["timeout"]["connect"] == 3.0


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
