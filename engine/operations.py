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

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from litestar import Request, Response

from engine import attempts, carry_store, opencode
from engine.catalog import Candidate, check_capabilities
from engine.documents import health, models_list, models_retrieve
from engine.errors import GatewayError, invalid_request, job_not_found, not_implemented
from engine.gateway import Gateway
from engine.ledger import Trip
from engine.lower import Context, UpstreamRequest, lower_request
from engine.media import (
    passthrough,
    prepare_embeddings,
    prepare_video_content,
    prepare_video_create,
    prepare_video_status,
)
from engine.multipart import close_form, read_form
from engine.proxy import Timer, proxy
from engine.select import select_wire
from engine.shapes.base import Renderer
from engine.shapes.chat import CHAT
from engine.shapes.responses import FromChatRenderer, NativeRenderer
from engine.shapes.responses_request import capability_view, check_input, to_chat
from engine.storage import KeyRecord
from engine.validate import (
    ChatCompletionRequest,
    ResponsesRequest,
    parse_json_object,
    validate_chat,
    validate_responses,
)
from engine.validate_media import (
    EmbeddingsRequest,
    ImagesRequest,
    SpeechRequest,
    TranscriptionForm,
    VideoContentQuery,
    VideoRequest,
    validate_embeddings,
    validate_images,
    validate_speech,
    validate_transcription,
    validate_video,
    validate_video_content,
)
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
    # The type `validate` checks against: `engine check` holds mapping paths and `request.*` reads to its fields.
    request: type | None = None
    # What request-stage mappings see, when not `request` (`/responses` is bridged into a chat request first).
    mapped: type | None = None


def prepare_chat(body: dict[str, Any], candidate: Candidate, ctx: Context) -> tuple[UpstreamRequest, Renderer]:
    check_capabilities(body, candidate)
    choice = select_wire(candidate, body, "chat.completions", "chat")
    return lower_request(candidate, body, choice, "chat.completions", ctx.strip), CHAT


def prepare_responses(body: dict[str, Any], candidate: Candidate, ctx: Context) -> tuple[UpstreamRequest, Renderer]:
    """`/responses` for every model: passed through to providers that speak it, bridged over chat elsewhere."""
    choice = select_wire(candidate, body, "responses", "responses")
    if choice.wire.accepts == "responses":
        check_input(body)  # the bridge's type checks of the input items, converting nothing
        check_capabilities(capability_view(body), candidate)
        return lower_request(candidate, body, choice, "responses", ctx.strip), NativeRenderer()
    chat = to_chat(body)
    check_capabilities(chat, candidate)
    return lower_request(candidate, chat, choice, "responses", ctx.strip), FromChatRenderer(body, candidate.public_id)


_ROWS = (
    OperationRow("models.list", "none", body="none", respond=models_list),
    OperationRow("models.retrieve", "none", body="none", respond=models_retrieve),
    OperationRow(
        "chat.completions",
        "model",
        "chat",
        validate=validate_chat,
        prepare=prepare_chat,
        answers=("json", "sse"),
        request=ChatCompletionRequest,
    ),
    OperationRow(
        "responses",
        "model",
        "responses",
        validate=validate_responses,
        prepare=prepare_responses,
        answers=("json", "sse"),
        request=ResponsesRequest,
        mapped=ChatCompletionRequest,
    ),
    OperationRow(
        "embeddings",
        "model",
        "embeddings",
        validate=validate_embeddings,
        prepare=prepare_embeddings,
        request=EmbeddingsRequest,
    ),
    OperationRow(
        "images.generations",
        "model",
        "images",
        validate=validate_images,
        prepare=passthrough("images.generations", "images"),
        answers=("json", "sse"),
        request=ImagesRequest,
    ),
    OperationRow(
        "audio.speech",
        "model",
        "speech",
        validate=validate_speech,
        prepare=passthrough("audio.speech", "speech"),
        answers=("bytes", "sse"),
        request=SpeechRequest,
    ),
    OperationRow(
        "audio.transcriptions",
        "model",
        "transcriptions",
        "multipart",
        validate=validate_transcription,
        prepare=passthrough("audio.transcriptions", "transcriptions"),
        answers=("json", "bytes", "sse"),
        request=TranscriptionForm,
    ),
    OperationRow(
        "videos.generations",
        "model",
        "videos",
        "multipart",
        validate=validate_video,
        prepare=prepare_video_create,
        request=VideoRequest,
    ),
    OperationRow("videos.retrieve", "job", "videos.retrieve", "none", prepare=prepare_video_status),
    OperationRow(
        "videos.content",
        "job",
        "videos.content",
        "none",
        validate=validate_video_content,
        prepare=prepare_video_content,
        answers=("bytes",),
        request=VideoContentQuery,
    ),
    OperationRow("opencode.wellknown", "none", body="none", respond=opencode.wellknown, keyed=False),
    OperationRow("opencode.config", "none", body="none", respond=opencode.config, keyed=False),
    OperationRow("health", "none", body="none", respond=health, keyed=False),
)
OPERATIONS: dict[str, OperationRow] = {row.name: row for row in _ROWS}


# --------------------------------------------------------------------------- the request path per row


# What each row's body kind takes, by the request's Content-Type: a JSON row takes `application/json` and any
# `application/*+json`; a multipart row takes `multipart/form-data`, and JSON too (a form without files). A
# request that names no type is read as JSON, since nothing contradicts it (the OpenAI SDKs, the Vercel AI SDK
# and OpenCode always name it). Anything else is a 415 before the body is read: `text/plain` (what `fetch`
# sends for a string body), and `application/x-www-form-urlencoded`, what `curl -d` sends unless told.
_TAKES: dict[BodyKind, tuple[BodyKind, ...]] = {"json": ("json",), "multipart": ("multipart", "json"), "none": ()}
_WANTED = {"json": "a JSON body (`Content-Type: application/json`)", "multipart": "a `multipart/form-data` upload"}


def body_kind(row: OperationRow, content_type: str | None) -> BodyKind:
    """How this request's body is read, from its Content-Type and the row's body kind; or a 415."""
    if row.body == "none":
        return "none"
    media = (content_type or "").partition(";")[0].strip().lower()
    kind: BodyKind | None = None
    if not media or media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        kind = "json"
    elif media == "multipart/form-data":
        kind = "multipart"
    if kind in _TAKES[row.body]:
        return kind
    wanted = " or ".join(_WANTED[k] for k in reversed(_TAKES[row.body]))
    hint = ""
    if media == "application/x-www-form-urlencoded":
        hint = " (curl -d sends that unless told: add -H 'Content-Type: application/json')"
    message = f"This endpoint takes {wanted}; the request says `Content-Type: {media[:100]}`{hint}."
    raise GatewayError(415, message, code="unsupported_media_type")


def json_body(raw: bytes, max_depth: int) -> dict[str, Any]:
    """A JSON body, parsed: the one place both ways in (the ASGI handler of `engine.app` for JSON rows,
    `_parse` for the others) turn request bytes into the dict every later step reads. The content type was
    checked before the body was read (`body_kind`)."""
    return parse_json_object(raw, max_depth)


async def _parse(row: OperationRow, request: Request[Any, Any, Any], max_depth: int) -> tuple[dict[str, Any], int]:
    """The body as a dict, and the prompt estimate it gives. A multipart row also takes a JSON object (a
    form without files)."""
    content_type = request.headers.get("content-type")
    kind = body_kind(row, content_type)
    if kind == "json":
        raw = await request.body()
        return json_body(raw, max_depth), len(raw) // 4
    if kind == "multipart":
        limit = request.route_handler.resolve_request_max_body_size() or 0
        form = await read_form(request, limit)
        return form, _form_estimate(form)
    return {}, 0


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


# A model-resolved operation: (gateway, how to read its body, key, timer). It reads the body itself, so that
# nothing above it holds the parsed body while the upstream answers.
BodyReader = Callable[[], Awaitable[tuple[dict[str, Any], int]]]
ModelOperation = Callable[[Gateway, BodyReader, KeyRecord, Timer], Awaitable[Response[Any]]]


def by_model(row: OperationRow, receipt: bool = False) -> ModelOperation:
    """Resolve the body's `model` to its live candidates, admit the request under the key's limits, and
    try the candidates in fallback order.

    The body is read parsed: its raw bytes are not kept, only the prompt estimate they gave (~4 bytes per
    token). Once the last candidate is prepared, no later attempt can need the parsed body, so it is let go
    of; with the lowered request's own object dropped once encoded (`UpstreamRequest.json_bytes`), a request
    waiting on its upstream holds one copy of its body, as the bytes it sent."""
    prepare, validate, name = row.prepare, row.validate, row.name
    assert prepare is not None
    releases = row.body == "json"  # a multipart form is closed at the end instead

    async def operation(gw: Gateway, read: BodyReader, key: KeyRecord, timer: Timer) -> Response[Any]:
        body, estimate = await read()
        try:
            if validate is not None:
                validate(body)
            await carry_store.enter(gw.database, key.id, body, gw.specs.routes.gateway.carry_ttl_seconds)
            ctx = gw.context

            def prepared(candidate: Candidate, last: bool) -> Callable[[], tuple[UpstreamRequest, Renderer]]:
                def build() -> tuple[UpstreamRequest, Renderer]:
                    nonlocal body
                    if name not in candidate.serves:
                        raise _refuse_unserved(candidate, name)
                    ready = prepare(body, candidate, ctx)
                    if last and releases:
                        body = {}  # what the lowered request needs, it holds
                    return ready

                return build

            resolved = gw.catalog.resolve_all(_model_of(body))
            final = len(resolved) - 1
            candidates = [
                (c.provider.id, c.provider.spec.retry, prepared(c, i == final)) for i, c in enumerate(resolved)
            ]
            trip = await _admit(gw, key, name, timer, estimate, receipt)

            def attempt(ready: tuple[UpstreamRequest, Renderer]) -> Awaitable[Response[Any]]:
                return proxy(gw, ready[0], trip, timer, ready[1])

            model = resolved[0].public_id
            try:
                return await attempts.run(gw.attempts, gw.health, gw.specs.routes.headers, model, candidates, attempt)
            except Exception as error:  # kept in the ledger if it reached a provider
                gw.recorder.finish(trip, None, error.status if isinstance(error, GatewayError) else 500, "error")
                raise
        finally:
            if row.body == "multipart":
                close_form(body)

    return operation


def _form_estimate(form: dict[str, Any]) -> int:
    """~4 bytes per token of a form's text fields (its files were streamed to a spool and are not read again)."""
    return sum(len(v) for v in form.values() if isinstance(v, str)) // 4


async def _admit(gw: Gateway, key: KeyRecord, name: str, timer: Timer, estimate: int, receipt: bool) -> Trip:
    """The request's ledger trip, admitted under the key's limits (a 429 here when over one)."""
    trip = Trip.begin(key.id, name, timer.started)
    trip.prompt_estimate = estimate
    trip.receipt = receipt
    trip.release = await gw.gatekeeper.admit(key, estimate)
    return trip


def by_job(row: OperationRow, receipt: bool = False) -> Handler:
    """Resolve the route's one path parameter, a gateway job id, to the job the caller's key owns, and
    send the request to the provider that runs it (no fallback: the job lives there)."""
    prepare, validate, name = row.prepare, row.validate, row.name
    assert prepare is not None

    async def operation(
        gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
    ) -> Response[Any]:
        assert key is not None  # engine check keeps job operations behind gateway keys
        [job_id] = request.path_params.values()
        body: dict[str, Any] = {"video_id": job_id, **request.query_params.dict()}
        body = {k: v[-1] if isinstance(v, list) else v for k, v in body.items()}
        if validate is not None:
            validate(body)
        job = await gw.jobs.job(str(job_id), key.id)
        if job is None:
            raise job_not_found(str(job_id))
        candidate = gw.catalog.live_candidate(job.public_model, job.provider)
        if candidate is None:
            message = f"The provider that runs job `{job.id}` is not available right now; retry later."
            raise GatewayError(503, message, type="api_error", code="upstream_unavailable")
        upstream, renderer = prepare(body, candidate, dataclasses.replace(gw.context, job=job))
        trip = await _admit(gw, key, name, timer, 0, receipt)
        try:
            return await proxy(gw, upstream, trip, timer, renderer)
        except Exception as error:
            gw.recorder.finish(trip, None, error.status if isinstance(error, GatewayError) else 500, "error")
            raise

    return operation


def _parsed(row: OperationRow, operation: ModelOperation) -> Handler:
    async def parse_then(
        gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
    ) -> Response[Any]:
        assert key is not None  # engine check keeps proxied operations behind gateway keys
        return await operation(
            gw, functools.partial(_parse, row, request, gw.specs.routes.gateway.max_json_depth), key, timer
        )

    return parse_then


def unimplemented(name: str) -> Handler:
    async def operation(
        gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer
    ) -> Response[Any]:
        raise not_implemented(name)

    return operation


def handler_for(name: str, receipt: bool = False) -> Handler:
    """The operation behind a Litestar route handler (`engine.app` serves JSON model rows at the ASGI level,
    through `by_model` itself)."""
    row = OPERATIONS[name]
    if row.resolve == "none" and row.respond is not None:
        return row.respond
    if row.resolve == "model" and row.prepare is not None:
        return _parsed(row, by_model(row, receipt))
    if row.resolve == "job" and row.prepare is not None:
        return by_job(row, receipt)
    return unimplemented(name)
