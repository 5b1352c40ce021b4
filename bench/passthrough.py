"""The floor: a bare passthrough on the gateway's own stack, for `bench/run.py`'s third target.

Litestar on uvicorn (uvloop + httptools, one worker, no access log: what `engine serve` runs) with one
aiohttp session configured as the engine's transport configures its own. It forwards the request body's
bytes to the upstream, unread and unchanged, and relays the answer's bytes as they arrive: no auth, no
validation, no lowering, no raising, no metering. Any gateway on this stack costs at least this much, so
the gateway's figures are read as ratios to this one (issue 13).

    python bench/passthrough.py --port 9200 --upstream http://127.0.0.1:9100/v1 --key sk-...

`--client engine` swaps the aiohttp session for the gateway's own upstream client, used as engine/proxy.py uses
it: httpx's interface (`httpx.Request` in, `httpx.Response` out) over `engine.transport.AiohttpTransport`. That
interface is a fixed choice of the project, so the difference between the two floors is what it costs by
itself, with nothing else of the gateway around it (`bench/run.py --floor-client engine`).
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import httpx
import uvicorn
from litestar import Litestar, Request, Response, post
from litestar.response import Stream


def build_engine_client_app(upstream: str, key: str) -> Litestar:
    """The same passthrough over the gateway's upstream client (`--client engine`)."""
    from engine.transport import make_client

    client = make_client()
    url = httpx.URL(f"{upstream.rstrip('/')}/chat/completions")
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    extensions = {"timeout": httpx.Timeout(None, connect=10.0).as_dict()}

    async def stop() -> None:
        await client.aclose()

    @post("/external/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Response[Any]:
        sent = httpx.Request("POST", url, headers=headers, stream=httpx.ByteStream(await request.body()))
        sent.extensions = extensions
        sent.headers.encoding = "ascii"
        sent.read()
        answer = await client.send(sent, stream=True)
        media_type = answer.headers.get("content-type", "application/json")
        stream = answer.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        if media_type.startswith("text/event-stream"):

            async def relay() -> Any:
                try:
                    async for chunk in stream:
                        yield chunk
                finally:
                    await answer.aclose()

            return Stream(relay(), media_type=media_type, status_code=answer.status_code)
        try:
            body = b"".join([chunk async for chunk in stream])
        finally:
            await answer.aclose()
        return Response(body, media_type=media_type, status_code=answer.status_code)

    return Litestar(route_handlers=[chat], on_shutdown=[stop], openapi_config=None, debug=False)


def build_app(upstream: str, key: str) -> Litestar:
    session: list[aiohttp.ClientSession] = []  # made on start-up, inside the server's event loop
    url = f"{upstream.rstrip('/')}/chat/completions"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def start() -> None:
        connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=30.0, ttl_dns_cache=300)
        session.append(aiohttp.ClientSession(connector=connector, auto_decompress=False))

    async def stop() -> None:
        await session[0].close()

    @post("/external/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Response[Any]:
        answer = await session[0].post(url, data=await request.body(), headers=headers)
        media_type = answer.headers.get("content-type", "application/json")
        if media_type.startswith("text/event-stream"):

            async def relay() -> Any:
                try:
                    async for chunk in answer.content.iter_any():
                        yield chunk
                finally:
                    answer.release()

            return Stream(relay(), media_type=media_type, status_code=answer.status)
        try:
            body = await answer.read()
        finally:
            answer.release()
        return Response(body, media_type=media_type, status_code=answer.status)

    return Litestar(route_handlers=[chat], on_startup=[start], on_shutdown=[stop], openapi_config=None, debug=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's base URL, e.g. http://127.0.0.1:9100/v1")
    parser.add_argument("--key", required=True, help="the upstream API key")
    parser.add_argument("--client", choices=("aiohttp", "engine"), default="aiohttp", help="see the module's doc")
    args = parser.parse_args()
    app = (build_engine_client_app if args.client == "engine" else build_app)(args.upstream, args.key)
    uvicorn.run(
        app, host=args.host, port=args.port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
