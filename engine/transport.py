"""Send: the one upstream HTTP client, httpx's interface over aiohttp's connection pool.

httpx gives the rest of the engine (and the tests, through `httpx.MockTransport`) a small, well-known
interface. Its own pool and pure-Python HTTP/1.1 parser cost ~1 ms per request on this class of machine
and cap near 1,000 RPS (see `bench/`), so in production the bytes move through aiohttp's C-accelerated
client instead. This transport is ours rather than a third-party adapter because the exception mapping
matters here: a refused connection must surface as `httpx.ConnectError` (→ 502) and a silent upstream as
`httpx.ReadTimeout` (→ 504), never the other way round.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx

_CHUNK = 64 * 1024


def _map_exception(exc: BaseException) -> httpx.TransportError:
    message = type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientProxyConnectionError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    return httpx.NetworkError(message)


class _AiohttpStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_exception(exc) from None

    async def aclose(self) -> None:
        self._response.release()  # back to the pool when fully read, closed otherwise


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose connections, parsing and keep-alive are aiohttp's."""

    def __init__(self, max_connections: int = 512, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive_expiry,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        content = request.content  # the engine always sends complete bodies
        try:
            response = await self._get_session().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=content or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_exception(exc) from None
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_AiohttpStream(response),
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def make_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The shared upstream client. Pass a transport (e.g. `httpx.MockTransport`) to replace the network."""
    return httpx.AsyncClient(
        transport=transport or AiohttpTransport(),
        follow_redirects=False,
        trust_env=False,
    )
