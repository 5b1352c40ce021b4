"""Route: the Litestar application, built from `routes.toml`.

Each declared route becomes one handler that authenticates (when the route says so) and hands over to
its operation. Every error, including Litestar's own 404/405/413 and anything unexpected, leaves as an
OpenAI-shaped body; tracebacks go to the log, never to the client.

The proxied routes whose body is JSON (chat completions, responses, embeddings, images, speech) are the hot
path, and are served at the ASGI level (`_proxied`), still as Litestar route handlers: Litestar routes them
and handles their errors, but no `Request`, signature model or response pipeline is built per request; the
handler reads the three headers it needs from the scope and the body from `receive`, and parses it at once,
so the raw bytes are not kept while the request is in flight. Everything else is an ordinary handler.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from typing import Any

from litestar import Litestar, Request, Response, asgi, route
from litestar.exceptions import ClientException, HTTPException, InternalServerException, MethodNotAllowedException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers import ASGIRouteHandler, HTTPRouteHandler
from litestar.types import Receive, Scope, Send

from engine import heap
from engine.errors import GatewayError, invalid_request
from engine.gateway import Gateway
from engine.memory import give_back_large_buffers
from engine.operations import OPERATIONS, OperationRow, body_kind, by_model, handler_for, json_body
from engine.proxy import Timer
from engine.respond import JSONAnswer, StreamAnswer
from engine.spec.models import Route
from engine.timeouts import CALLER, Caller

log = logging.getLogger("engine.app")


def _handler(gw: Gateway, spec: Route) -> HTTPRouteHandler | ASGIRouteHandler:
    row = OPERATIONS[spec.operation]
    if row.resolve == "model" and row.body == "json" and row.prepare is not None and spec.auth == "gateway_key":
        return _proxied(gw, spec, row)
    operation = handler_for(spec.operation, spec.receipt)
    needs_key = spec.auth == "gateway_key"
    limit = spec.max_body_mb or gw.specs.routes.gateway.max_body_mb

    deadline_header = gw.specs.routes.gateway.deadline_header
    idle = gw.specs.routes.gateway.answer_idle_seconds

    async def handle(request: Request[Any, Any, Any]) -> Response[Any]:
        timer = Timer(time.perf_counter())
        key = await gw.authenticate(request.headers.get("authorization")) if needs_key else None
        caller = Caller(request.receive, _deadline(request, deadline_header), idle)
        token = CALLER.set(caller)
        task = caller.task
        try:
            return await operation(gw, request, key, timer)
        except asyncio.CancelledError:
            if caller.gone and task is not None and task.uncancel() == 0:
                log.info("client hung up on %s %s; upstream call cancelled", request.method, request.url.path)
                return Response(b"", status_code=499)  # nobody reads it: the connection is gone
            raise
        finally:
            caller.stop()
            CALLER.reset(token)

    handle.__name__ = f"{spec.method.lower()}_{spec.operation.replace('.', '_')}"
    return route(
        spec.path,
        http_method=[spec.method],
        name=f"{spec.method} {spec.path}",
        status_code=200,
        request_max_body_size=limit * 1024 * 1024,
    )(handle)


def _proxied(gw: Gateway, spec: Route, row: OperationRow) -> ASGIRouteHandler:
    """A JSON model route at the ASGI level: the same steps as `_handler`'s (auth, the caller's deadline and
    hang-up, the operation), the answer sent as the ASGI app it already is. Litestar's 404s, and the errors
    raised here, go through the application's exception handlers as before; a wrong method is the same 405
    (OPTIONS the same 204) that Litestar's own routes give."""
    operation = by_model(row, spec.receipt)
    limit = (spec.max_body_mb or gw.specs.routes.gateway.max_body_mb) * 1024 * 1024
    max_depth = gw.specs.routes.gateway.max_json_depth
    deadline_header = gw.specs.routes.gateway.deadline_header
    idle = gw.specs.routes.gateway.answer_idle_seconds
    deadline_name = deadline_header.lower().encode() if deadline_header else b""
    wanted = {b"authorization", b"content-length", b"content-type", deadline_name}
    allow = [(b"allow", f"OPTIONS, {spec.method}".encode())]

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        timer = Timer(time.perf_counter())
        method = scope["method"]  # type: ignore[typeddict-item]
        if method != spec.method:
            if method == "OPTIONS":
                await send({"type": "http.response.start", "status": 204, "headers": allow})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            raise MethodNotAllowedException()
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in wanted and name not in headers:  # the first of repeated headers, as Litestar reads them
                headers[name] = value
        authorization = headers.get(b"authorization")
        key = await gw.authenticate(authorization.decode("latin-1") if authorization is not None else None)
        deadline = headers.get(deadline_name) if deadline_header else None
        caller = Caller(receive, _deadline_of(deadline_header, deadline.decode("latin-1") if deadline else None), idle)
        token = CALLER.set(caller)
        task = caller.task
        try:
            answer = await operation(
                gw, functools.partial(_json_of, row, receive, headers, limit, max_depth), key, timer
            )
        except asyncio.CancelledError:
            if caller.gone and task is not None and task.uncancel() == 0:
                log.info("client hung up on %s %s; upstream call cancelled", method, scope["path"])
                await send({"type": "http.response.start", "status": 499, "headers": []})  # nobody reads it
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            raise
        finally:
            caller.stop()
            CALLER.reset(token)
        if isinstance(answer, JSONAnswer | StreamAnswer):  # what proxied answers are: their own ASGI apps
            await answer(scope, receive, send)
        else:
            await answer.to_asgi_response(None, Request(scope, receive))(scope, receive, send)

    handle.__name__ = f"{spec.method.lower()}_{spec.operation.replace('.', '_')}"
    return asgi(spec.path, name=f"{spec.method} {spec.path}", copy_scope=False)(handle)


async def _json_of(
    row: OperationRow, receive: Receive, headers: dict[bytes, bytes], limit: int, max_depth: int
) -> tuple[dict[str, Any], int]:
    """The request body parsed, and the prompt estimate its size gives; the bytes themselves are dropped here.
    Bounded as Litestar bounds a body (its 413 on a declared or a streamed size over `limit`, its 400 on a bad
    content-length); a content type the row does not take is a 415 before the body is read."""
    header = headers.get(b"content-type")
    content_type = header.decode("latin-1") if header is not None else None
    body_kind(row, content_type)
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            announced = int(declared)
        except ValueError:
            raise ClientException(f"Invalid content-length: {declared.decode('latin-1')!r}") from None
        if announced > limit:
            raise RequestEntityTooLarge
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        if chunk:
            total += len(chunk)
            if total > limit:
                raise RequestEntityTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    del chunks
    return json_body(raw, max_depth), total // 4  # and the prompt estimate: ~4 bytes per token


def _deadline(request: Request[Any, Any, Any], header: str | None) -> float | None:
    """The client's deadline header (ms from now) as event-loop time, or None."""
    return _deadline_of(header, request.headers.get(header) if header is not None else None)


def _deadline_of(header: str | None, value: str | None) -> float | None:
    """A deadline header's value (ms from now) as event-loop time; None without one."""
    if header is None or value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        ms = math.nan
    if not ms > 0 or math.isinf(ms):
        raise invalid_request(
            f"The `{header}` header must be a positive number of milliseconds; got {value[:40]!r}.", param=header
        )
    return asyncio.get_running_loop().time() + ms / 1000


def _gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    return Response(exc.body(), status_code=exc.status, media_type="application/json", headers=exc.headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status == 404:
        error = GatewayError(404, f"Invalid URL ({request.method} {request.url.path}).", code="unknown_url")
    elif status == 405:
        error = GatewayError(
            405, f"Method {request.method} is not allowed on {request.url.path}.", code="method_not_allowed"
        )
    elif status == 413:
        error = GatewayError(413, "The request body is too large.", code="request_too_large")
    else:
        error = GatewayError(status, str(exc.detail))
    return _gateway_error(request, error)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = GatewayError(
        500,
        "The gateway failed to process this request. It has been logged; retry later.",
        type="api_error",
        code="internal_error",
    )
    return _gateway_error(request, error)


def build_app(gw: Gateway, *, server: bool = False) -> Litestar:
    """The application; `server` for a serving worker's own process, whose collector it tunes at start-up
    (`engine.heap`; tests build many applications in one process and leave its collector alone)."""
    return Litestar(
        route_handlers=[_handler(gw, spec) for spec in gw.specs.routes.routes],
        on_startup=[gw.startup, heap.settle] if server else [gw.startup],
        on_shutdown=[gw.shutdown],
        exception_handlers={GatewayError: _gateway_error, HTTPException: _http_error, Exception: _unexpected},
        openapi_config=None,
        request_max_body_size=gw.specs.routes.gateway.max_body_mb * 1024 * 1024,
        debug=False,
    )


def create_app() -> Litestar:
    """Uvicorn factory: the gateway from the environment (`ENGINE_SPECS`, `ENGINE_DB`, provider keys). Runs in
    every worker process, so each gives large buffers back (`engine.memory`)."""
    give_back_large_buffers()
    return build_app(Gateway.build(), server=True)
