"""Send: the one upstream HTTP client, httpx's interface over aiohttp's connection pool.

httpx gives the rest of the engine (and the tests, through `httpx.MockTransport`) a small, well-known
interface. Its own pool and pure-Python HTTP/1.1 parser cost ~1 ms per request on this class of machine
and cap near 1,000 RPS (see `bench/`), so in production the bytes move through aiohttp's C-accelerated
client instead. This transport is ours rather than a third-party adapter because the exception mapping
matters here: a refused connection must surface as `httpx.ConnectError` (→ 502) and a silent upstream as
`httpx.ReadTimeout` (→ 504), never the other way round.

`make_client` returns an `UpstreamClient`, whose `send` hands the request straight to this transport: httpx's
generic `send` wraps every request in an auth flow, a redirect loop, event hooks, a cookie jar and an INFO
log line, none of which the gateway uses, and together they were a quarter of the gateway's CPU per request
(`bench/run.py --compare-engine`, `bench/transports.py`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

from engine.bounded import ACCEPT_ENCODING

_CHUNK = 64 * 1024


def _map_exception(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    message = type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientProxyConnectionError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message, request=request)
    return httpx.NetworkError(message, request=request)


@functools.lru_cache(maxsize=256)
def _timeout(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)  # immutable: one per pair


class _AiohttpStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = self._response.content.readany  # what `iter_any()` loops over, one iterator object less per read
        try:
            while chunk := await read():
                yield chunk
        except aiohttp.EofStream:
            return
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_exception(exc, self._request) from None

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
            # Bodies stay encoded here: `engine.bounded` inflates them with a cap. Only encodings it can bound
            # are asked for (aiohttp would otherwise advertise whatever it could decode itself).
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
                headers={"Accept-Encoding": ACCEPT_ENCODING},
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            data: Any = request.content or None  # a complete body: JSON, or nothing
        except httpx.RequestNotRead:
            data = request.stream  # a streamed body (multipart uploads), sent as it is read
        try:
            response = await self._get_session().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,
                timeout=_timeout(timeout.get("connect"), timeout.get("read")),
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_exception(exc, request) from None
        answer = httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_AiohttpStream(response, request),
            request=request,
        )
        if b"".join(itertools.chain.from_iterable(response.raw_headers)).isascii():
            answer.headers.encoding = "ascii"  # httpx would find that out by decoding every header, per response
        return answer

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class UpstreamClient(httpx.AsyncClient):
    """An httpx.AsyncClient whose `send` goes straight to its transport when nothing needs httpx's wrapping.

    httpx's `send` runs an auth flow, a redirect loop, event hooks and a cookie jar around every request, and
    logs an INFO line for each. The gateway uses none of them: upstream credentials are a header the spec
    lowers, redirects are never followed, and a jar shared by all callers would carry one caller's upstream
    cookies (a load balancer's, say) into everyone's requests. Under Litestar's logging set-up the INFO line
    alone went through a queue thread per request. Skipping them took the gateway from ~0.75 to ~0.55 ms of CPU
    per request and from ~1,350 to ~1,800 RPS on one worker (bench/README.md). A client configured with auth,
    redirects or event hooks, or asked for them per call, gets httpx's full `send`.

    Not kept on this path: `response.elapsed` (unset) and httpx's per-request log line.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._upstream = transport

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        redirects = self.follow_redirects if follow_redirects is httpx.USE_CLIENT_DEFAULT else follow_redirects
        credentials = self.auth if auth is httpx.USE_CLIENT_DEFAULT else auth
        hooks = self.event_hooks
        if redirects or credentials is not None or hooks["request"] or hooks["response"] or self.is_closed:
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        if "timeout" not in request.extensions:
            request.extensions["timeout"] = self.timeout.as_dict()
        response = await self._upstream.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


def make_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The shared upstream client. Pass a transport (e.g. `httpx.MockTransport`) to replace the network."""
    return UpstreamClient(
        transport or AiohttpTransport(),
        follow_redirects=False,
        trust_env=False,
    )
