"""Route: the Litestar application, built from `routes.toml`.

Each declared route becomes one handler that authenticates (when the route says so) and hands over to
its operation. Every error, including Litestar's own 404/405/413 and anything unexpected, leaves as an
OpenAI-shaped body; tracebacks go to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from litestar import Litestar, Request, Response, route
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler

from engine.errors import GatewayError, invalid_request
from engine.gateway import Gateway
from engine.operations import handler_for
from engine.proxy import Timer
from engine.spec.models import Route
from engine.timeouts import CALLER, Caller

log = logging.getLogger("engine.app")


def _handler(gw: Gateway, spec: Route) -> HTTPRouteHandler:
    operation = handler_for(spec.operation, spec.receipt)
    needs_key = spec.auth == "gateway_key"
    limit = spec.max_body_mb or gw.specs.routes.gateway.max_body_mb

    deadline_header = gw.specs.routes.gateway.deadline_header

    async def handle(request: Request[Any, Any, Any]) -> Response[Any]:
        timer = Timer(time.perf_counter())
        key = await gw.authenticate(request.headers.get("authorization")) if needs_key else None
        caller = Caller(request.receive, _deadline(request, deadline_header))
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


def _deadline(request: Request[Any, Any, Any], header: str | None) -> float | None:
    """The client's deadline header (ms from now) as event-loop time, or None."""
    if header is None:
        return None
    value = request.headers.get(header)
    if value is None:
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


def build_app(gw: Gateway) -> Litestar:
    return Litestar(
        route_handlers=[_handler(gw, spec) for spec in gw.specs.routes.routes],
        on_startup=[gw.startup],
        on_shutdown=[gw.shutdown],
        exception_handlers={GatewayError: _gateway_error, HTTPException: _http_error, Exception: _unexpected},
        openapi_config=None,
        request_max_body_size=gw.specs.routes.gateway.max_body_mb * 1024 * 1024,
        debug=False,
    )


def create_app() -> Litestar:
    """Uvicorn factory: the gateway from the environment (`ENGINE_SPECS`, `ENGINE_DB`, provider keys)."""
    return build_app(Gateway.build())
