"""Documents the gateway answers itself, from its catalog: the model list and the model object.

No upstream is involved, so these operations resolve nothing and never fall back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response

from engine.catalog import Candidate
from engine.errors import invalid_request
from engine.gateway import Gateway
from engine.proxy import Timer
from engine.storage import KeyRecord


def json_response(doc: Any) -> Response[Any]:
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
        "operations": row.operations,
        "capabilities": {
            "tools": row.tools,
            "reasoning": row.reasoning,
            "streaming": row.streaming,
            "structured_output": row.structured_output,
        },
        "modalities": row.modalities.model_dump(),
    }
    if row.dimensions is not None:
        doc["dimensions"] = row.dimensions
    if row.price is not None:
        doc["pricing"] = {"currency": "USD", "unit": "1M tokens", **row.price.model_dump(exclude_none=True)}
    return doc


async def models_list(
    gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
) -> Response[Any]:
    data = [model_object(candidates[0]) for candidates in gw.catalog.live_models().values()]
    return json_response({"object": "list", "data": data})


async def models_retrieve(
    gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
) -> Response[Any]:
    model = str(request.path_params.get("model", "")).strip("/")
    if not model:
        raise invalid_request("Name a model: GET /models/{model}.", param="model")
    return json_response(model_object(gw.catalog.resolve(model)))


async def health(gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer) -> Response[Any]:
    """Each live provider's circuit, recent error rate and connections in use (`engine/health.py`). Served
    without a key, so it holds nothing secret: provider ids, never a URL or a credential. 503 when every
    provider's circuit is open, so a load balancer can tell."""
    doc = gw.health.document([p.id for p in gw.catalog.live_providers()], gw.pools)
    status = 503 if doc["status"] == "down" else 200
    return Response(msgspec.json.encode(doc), media_type="application/json", status_code=status)
