"""The operations a route can name in `routes.toml`. Each is the request path for one endpoint:
validate → resolve model → select wire → lower → proxy. Operations without a codec answer 501."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response

from engine.catalog import Candidate, check_capabilities
from engine.errors import GatewayError, invalid_request, model_not_found, not_implemented
from engine.gateway import Gateway
from engine.lower import UpstreamRequest, lower_request
from engine.proxy import Timer, proxy
from engine.select import select_wire
from engine.shapes.base import Renderer
from engine.shapes.chat import CHAT
from engine.shapes.responses import FromChatRenderer, NativeRenderer
from engine.shapes.responses_request import capability_view, to_chat
from engine.store import KeyRecord
from engine.validate import parse_json_object, validate_chat, validate_responses

log = logging.getLogger("engine.operations")

Operation = Callable[[Gateway, Request[Any, Any, Any], KeyRecord | None, Timer], Awaitable[Response[Any]]]


def _json(doc: Any) -> Response[Any]:
    return Response(msgspec.json.encode(doc), media_type="application/json")


def _created(candidate: Candidate) -> int:
    date = candidate.row.release_date
    return int(datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp()) if date else 0


def model_object(candidate: Candidate) -> dict[str, Any]:
    """OpenAI's Model object, plus the catalog facts OpenAI-compatible clients look for."""
    row = candidate.row
    doc: dict[str, Any] = {
        "id": candidate.public_id,
        "object": "model",
        "created": _created(candidate),
        "owned_by": candidate.provider.id,
        "name": row.name or candidate.public_id,
        "context_length": row.context,
        "max_output_tokens": row.max_output,
        "capabilities": {
            "tools": row.tools,
            "reasoning": row.reasoning,
            "streaming": row.streaming,
            "structured_output": row.structured_output,
        },
        "modalities": row.modalities.model_dump(),
    }
    if row.price is not None:
        doc["pricing"] = {"currency": "USD", "unit": "1M tokens", **row.price.model_dump(exclude_none=True)}
    return doc


async def models_list(
    gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
) -> Response[Any]:
    data = [model_object(candidates[0]) for candidates in gw.catalog.live_models().values()]
    return _json({"object": "list", "data": data})


async def models_retrieve(
    gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
) -> Response[Any]:
    model = str(request.path_params.get("model", "")).strip("/")
    if not model:
        raise invalid_request("Name a model: GET /models/{model}.", param="model")
    candidates = gw.catalog.live_models().get(model)
    if not candidates:
        raise model_not_found(model)
    return _json(model_object(candidates[0]))


def prepare_chat(body: dict[str, Any], candidate: Candidate, strip: frozenset[str]) -> tuple[UpstreamRequest, Renderer]:
    check_capabilities(body, candidate)
    choice = select_wire(candidate, body, "chat.completions")
    return lower_request(candidate, body, choice, "chat.completions", strip), CHAT


def prepare_responses(
    body: dict[str, Any], candidate: Candidate, strip: frozenset[str]
) -> tuple[UpstreamRequest, Renderer]:
    """`/responses` for every model: passed through to providers that speak it, bridged over chat elsewhere."""
    choice = select_wire(candidate, body, "responses")
    if choice.wire.accepts == "responses":
        check_capabilities(capability_view(body), candidate)
        return lower_request(candidate, body, choice, "responses", strip), NativeRenderer()
    chat = to_chat(body)
    check_capabilities(chat, candidate)
    return lower_request(candidate, chat, choice, "responses", strip), FromChatRenderer(body, candidate.public_id)


@dataclass(frozen=True)
class Proxied:
    """An operation that sends the request upstream: how to validate it, and how to lower it for a candidate."""

    validate: Callable[[dict[str, Any]], None]
    prepare: Callable[[dict[str, Any], Candidate, frozenset[str]], tuple[UpstreamRequest, Renderer]]


PROXIED: dict[str, Proxied] = {
    "chat.completions": Proxied(validate_chat, prepare_chat),
    "responses": Proxied(validate_responses, prepare_responses),
}


def proxied(spec: Proxied) -> Operation:
    async def operation(
        gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
    ) -> Response[Any]:
        assert key is not None  # engine check keeps proxied operations behind gateway keys
        body = parse_json_object(await request.body())
        spec.validate(body)
        candidates = gw.catalog.resolve_all(body["model"])[: gw.specs.routes.fallback.max_attempts]
        failed: list[GatewayError] = []
        tried: list[str] = []
        for candidate in candidates:
            try:
                upstream, renderer = spec.prepare(body, candidate, gw.strip_fields)
            except GatewayError:
                if not failed:
                    raise  # the preferred provider's own refusal (a capability, say) is the answer
                continue  # a fallback that cannot serve this request is skipped
            try:
                response = await proxy(gw, upstream, key, timer, renderer)
            except GatewayError as error:
                if not error.retryable:
                    _name_fallbacks(gw, error.headers, tried)
                    raise
                log.warning("%s answered %s; trying the next provider", candidate.provider.id, error.status)
                failed.append(error)
                tried.append(candidate.provider.id)
                continue
            _name_fallbacks(gw, response.headers, tried)
            return response
        _name_fallbacks(gw, failed[-1].headers, tried[:-1])
        raise failed[-1]

    return operation


def _name_fallbacks(gw: Gateway, headers: Any, failed: list[str]) -> None:
    name = gw.specs.routes.headers.fallback_from
    if name and failed:
        headers[name] = ",".join(failed)


def unimplemented(name: str) -> Operation:
    async def operation(
        gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
    ) -> Response[Any]:
        raise not_implemented(name)

    return operation


IMPLEMENTED: dict[str, Operation] = {
    "models.list": models_list,
    "models.retrieve": models_retrieve,
    **{name: proxied(spec) for name, spec in PROXIED.items()},
}


def operation_for(name: str) -> Operation:
    return IMPLEMENTED.get(name) or unimplemented(name)
