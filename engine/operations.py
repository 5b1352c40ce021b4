"""The operations a route can name in `routes.toml`. Each is the request path for one endpoint:
validate → resolve model → select wire → lower → proxy. Operations without a codec answer 501."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response

from engine.catalog import Candidate, check_capabilities
from engine.errors import invalid_request, model_not_found, not_implemented
from engine.gateway import Gateway
from engine.lower import lower_request
from engine.proxy import Timer, proxy
from engine.select import select_wire
from engine.store import KeyRecord
from engine.validate import parse_json_object, validate_chat

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


async def chat_completions(
    gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
) -> Response[Any]:
    assert key is not None  # routes.toml puts proxied operations behind gateway keys (engine check)
    body = parse_json_object(await request.body())
    validate_chat(body)
    candidate = gw.catalog.resolve(body["model"])
    check_capabilities(body, candidate)
    choice = select_wire(candidate, body, "chat.completions")
    upstream = lower_request(candidate, body, choice, "chat.completions", gw.strip_fields)
    return await proxy(gw, upstream, key, timer)


def unimplemented(name: str) -> Operation:
    async def operation(
        gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
    ) -> Response[Any]:
        raise not_implemented(name)

    return operation


IMPLEMENTED: dict[str, Operation] = {
    "models.list": models_list,
    "models.retrieve": models_retrieve,
    "chat.completions": chat_completions,
}


def operation_for(name: str) -> Operation:
    return IMPLEMENTED.get(name) or unimplemented(name)
