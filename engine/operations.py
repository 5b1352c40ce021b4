"""The operations a route can name in `routes.toml`: ONE table, one row per operation.

A row says everything the engine needs to serve an endpoint, so a new endpoint is a row, not a fork:
- `body`: how the request body is parsed (a JSON object, a multipart form, or none);
- `validate`: the request schema checked before anything else;
- `resolve`: what picks the upstream: the body's `model` (through the catalog, with fallback), a job id
  in the path (through the job store), or nothing (the gateway answers from its own state);
- `shape`: the API its clients speak, which selects the wire codec (`select.select_wire`);
- `prepare`: validate → resolve → select wire → lower, for one candidate;
- `answers`: what the upstream answer may be (JSON, SSE or bytes); each lowered request names its own.

The spec models (`routes.toml`'s `operation`, a model row's `operations`), `engine lower --operation`
and the catalog's start-up specialization all read their names from here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from litestar import Request, Response

from engine import attempts, carry_store
from engine.catalog import Candidate, check_capabilities
from engine.documents import health, models_list, models_retrieve
from engine.errors import GatewayError, invalid_request, not_implemented
from engine.gateway import Gateway
from engine.ledger import Trip
from engine.lower import Context, UpstreamRequest, lower_request
from engine.proxy import Timer, proxy
from engine.select import select_wire
from engine.shapes.base import Renderer
from engine.shapes.chat import CHAT
from engine.shapes.responses import FromChatRenderer, NativeRenderer
from engine.shapes.responses_request import capability_view, to_chat
from engine.storage import KeyRecord
from engine.validate import parse_json_object, validate_chat, validate_responses
from engine.wires.base import AnswerKind, BodyKind

log = logging.getLogger("engine.operations")

Handler = Callable[[Gateway, Request[Any, Any, Any], KeyRecord | None, Timer], Awaitable[Response[Any]]]
Resolve = Literal["model", "job", "none"]


Prepare = Callable[[dict[str, Any], Candidate, Context], tuple[UpstreamRequest, Renderer]]


@dataclass(frozen=True)
class OperationRow:
    name: str
    resolve: Resolve
    shape: str | None = None  # the client API shape; None for documents the gateway answers itself
    body: BodyKind = "json"
    validate: Callable[[dict[str, Any]], None] | None = None
    prepare: Prepare | None = None
    respond: Handler | None = None  # resolve == "none": the gateway's own answer
    answers: tuple[AnswerKind, ...] = ("json",)
    keyed: bool = True  # needs a gateway key (engine check enforces it on the route)


def prepare_chat(body: dict[str, Any], candidate: Candidate, ctx: Context) -> tuple[UpstreamRequest, Renderer]:
    check_capabilities(body, candidate)
    choice = select_wire(candidate, body, "chat.completions", "chat")
    return lower_request(candidate, body, choice, "chat.completions", ctx.strip), CHAT


def prepare_responses(body: dict[str, Any], candidate: Candidate, ctx: Context) -> tuple[UpstreamRequest, Renderer]:
    """`/responses` for every model: passed through to providers that speak it, bridged over chat elsewhere."""
    choice = select_wire(candidate, body, "responses", "responses")
    if choice.wire.accepts == "responses":
        check_capabilities(capability_view(body), candidate)
        return lower_request(candidate, body, choice, "responses", ctx.strip), NativeRenderer()
    chat = to_chat(body)
    check_capabilities(chat, candidate)
    return lower_request(candidate, chat, choice, "responses", ctx.strip), FromChatRenderer(body, candidate.public_id)


_ROWS = (
    OperationRow("models.list", "none", body="none", respond=models_list),
    OperationRow("models.retrieve", "none", body="none", respond=models_retrieve),
    OperationRow(
        "chat.completions", "model", "chat", validate=validate_chat, prepare=prepare_chat, answers=("json", "sse")
    ),
    OperationRow(
        "responses",
        "model",
        "responses",
        validate=validate_responses,
        prepare=prepare_responses,
        answers=("json", "sse"),
    ),
    OperationRow("embeddings", "model", "embeddings"),
    OperationRow("images.generations", "model", "images"),
    OperationRow("audio.speech", "model", "speech", answers=("bytes", "sse")),
    OperationRow("audio.transcriptions", "model", "transcriptions", "multipart", answers=("json", "bytes", "sse")),
    OperationRow("videos.generations", "model", "videos"),
    OperationRow("opencode.wellknown", "none", body="none", keyed=False),
    OperationRow("opencode.config", "none", body="none", keyed=False),
    OperationRow("health", "none", body="none", respond=health, keyed=False),
)
OPERATIONS: dict[str, OperationRow] = {row.name: row for row in _ROWS}


# --------------------------------------------------------------------------- the request path per row


async def _parse(row: OperationRow, request: Request[Any, Any, Any]) -> dict[str, Any]:
    if row.body == "json":
        return parse_json_object(await request.body())
    raise not_implemented(row.name)  # multipart bodies arrive with their first operation


def _model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("Missing required parameter: 'model'.", param="model")
    return model


def _refuse_unserved(candidate: Candidate, operation: str) -> GatewayError:
    served = ", ".join(f"`{name}`" for name in candidate.row.operations)
    return GatewayError(
        400,
        f"The model `{candidate.public_id}` does not serve `{operation}`; it serves {served}. "
        "Pick a model that serves this endpoint (GET /models lists each model's `operations`).",
        param="model",
        code="unsupported_operation",
    )


def by_model(row: OperationRow, receipt: bool = False) -> Handler:
    """Resolve the body's `model` to its live candidates, admit the request under the key's limits, and
    try the candidates in fallback order."""
    prepare, validate, name = row.prepare, row.validate, row.name
    assert prepare is not None

    async def operation(
        gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
    ) -> Response[Any]:
        assert key is not None  # engine check keeps proxied operations behind gateway keys
        body = await _parse(row, request)
        if validate is not None:
            validate(body)
        await carry_store.enter(gw.database, key.id, body, gw.specs.routes.gateway.carry_ttl_seconds)
        ctx = gw.context

        def prepared(candidate: Candidate) -> Callable[[], tuple[UpstreamRequest, Renderer]]:
            def build() -> tuple[UpstreamRequest, Renderer]:
                if name not in candidate.serves:
                    raise _refuse_unserved(candidate, name)
                return prepare(body, candidate, ctx)

            return build

        resolved = gw.catalog.resolve_all(_model_of(body))
        candidates = [(c.provider.id, c.provider.spec.retry, prepared(c)) for c in resolved]
        trip = Trip.begin(key.id, name, timer.started)
        trip.prompt_estimate = len(await request.body()) // 4  # the body is cached: no second read
        trip.receipt = receipt
        trip.release = await gw.gatekeeper.admit(key, trip.prompt_estimate)  # a 429 here when over a limit

        def attempt(ready: tuple[UpstreamRequest, Renderer]) -> Awaitable[Response[Any]]:
            return proxy(gw, ready[0], trip, timer, ready[1])

        model = resolved[0].public_id
        try:
            return await attempts.run(gw.attempts, gw.health, gw.specs.routes.headers, model, candidates, attempt)
        except Exception as error:  # kept in the ledger if it reached a provider
            gw.recorder.finish(trip, None, error.status if isinstance(error, GatewayError) else 500, "error")
            raise

    return operation


def unimplemented(name: str) -> Handler:
    async def operation(
        gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
    ) -> Response[Any]:
        raise not_implemented(name)

    return operation


def handler_for(name: str, receipt: bool = False) -> Handler:
    row = OPERATIONS[name]
    if row.resolve == "none" and row.respond is not None:
        return row.respond
    if row.resolve == "model" and row.prepare is not None:
        return by_model(row, receipt)
    return unimplemented(name)
