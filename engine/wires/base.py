"""What every wire codec provides, and the small types that cross the codec boundary.

A wire codec translates between the gateway's canonical request/answer shape (OpenAI Chat Completions)
and one upstream protocol. It never does I/O: `lower` builds a request body, `raise_json` and
`raise_stream` translate answers, `error_of` reads an upstream error body. That keeps codecs pure and
snapshot-testable, and leaves sending to `engine.transport`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from engine.spec.models import ModelRow
from engine.wires.sse import Event

JSON = dict[str, Any]
StreamItem = bytes | JSON  # a chunk: pre-encoded JSON when passed through untouched, else a dict


TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
UNIT_FIELDS = ("images", "characters", "audio_seconds", "video_seconds")
SHOWN_WHEN_USED = ("cache_write_tokens", *UNIT_FIELDS)


@dataclass(slots=True)
class Usage:
    """What one answer consumed: tokens in OpenAI's terms (reasoning tokens are inside completion tokens),
    and the other units media endpoints are billed in. The one carrier of usage: metering and prices
    (`spec.models.Price`, one price per unit) read nothing else."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens read from the provider's prompt cache
    reasoning_tokens: int = 0
    images: int = 0  # images generated
    characters: int = 0  # characters of text turned into speech
    audio_seconds: float = 0.0  # seconds of audio transcribed
    video_seconds: float = 0.0  # seconds of video generated
    cache_write_tokens: int = 0  # prompt tokens written to the prompt cache (Anthropic bills them apart)

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.images += other.images
        self.characters += other.characters
        self.audio_seconds += other.audio_seconds
        self.video_seconds += other.video_seconds
        self.cache_write_tokens += other.cache_write_tokens

    def shown(self) -> dict[str, int | float]:
        """The counts as a document (logs, receipts, snapshots): tokens always, other units when used."""
        doc: dict[str, int | float] = {name: getattr(self, name) for name in TOKEN_FIELDS}
        doc.update({name: value for name in SHOWN_WHEN_USED if (value := getattr(self, name))})
        return doc

    @classmethod
    def from_chat(cls, usage: Any) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=_int(usage.get("total_tokens")) or prompt + completion,
            cached_tokens=_int(prompt_details.get("cached_tokens")),
            reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
            cache_write_tokens=_int(prompt_details.get("cache_write_tokens")),
        )


# Chat fields that change what the answer is and that other wires have no way to carry: a codec for such a
# wire refuses them (with its own additions) rather than ignore them.
UNCARRIED_CHAT_FIELDS = {
    "audio": "audio output",
    "modalities": "output modalities",
    "prediction": "predicted outputs",
    "web_search_options": "web search options",
}


def chat_usage(usage: Usage) -> dict[str, Any]:
    """A Usage in the Chat Completions shape; the prompt-cache write count only when there is one."""
    prompt_details: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


class ChunkWriter:
    """The `chat.completion.chunk`s a codec raising another wire's stream emits: one id, created time and
    model on every chunk, `role` on the first delta, and the choice-less usage chunk at the end."""

    def __init__(self, id: str, created: int, model: str | None) -> None:
        self.id = id
        self.created = created
        self.model = model
        self.started = False

    def chunk(self, delta: JSON, finish: str | None = None) -> JSON:
        if not self.started:
            delta = {"role": "assistant", **delta}
            self.started = True
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def usage_chunk(self, usage: Usage) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": chat_usage(usage),
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


BodyKind = Literal["json", "multipart", "none"]
AnswerKind = Literal["json", "sse", "bytes"]


@dataclass(frozen=True)
class Lowered:
    """The wire-specific part of an upstream request: method and path under the base URL, the body and its
    kind (a JSON object, a `Multipart` form, or none), and the answer expected: `None` means SSE when the
    request streams, else JSON."""

    path: str
    body: Any
    query: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    body_kind: BodyKind = "json"
    answer: AnswerKind | None = None


@dataclass(frozen=True)
class UpstreamError:
    """An upstream error, normalized; still unsanitized.

    Codecs return one from `raise_json` when a 200 answer is really a refusal (a prompt blocked by a
    filter), and yield one from `raise_stream` when the upstream reports an error inside the stream.
    `status` is the HTTP status such an error stands for, when the codec knows it (400 for a blocked
    prompt); left None, the sanitizer infers it from `type`/`code` (see `errors.status_of`).
    """

    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None
    status: int | None = None
    keys: tuple[str, ...] = ()  # every key name in the error body, normalized by `key_name`


class StreamBroken(Exception):
    """The upstream stream ended or failed before its terminal event."""


def event_object(data: str | bytes) -> JSON:
    """One SSE event's data as a JSON object: anything else means the upstream stream is broken."""
    try:
        doc = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise StreamBroken("upstream sent an event that is not JSON") from None
    if not isinstance(doc, dict):
        raise StreamBroken("upstream sent an event that is not a JSON object")
    return doc


@dataclass
class Call:
    """One request's trip through a wire: what the codec needs to know, and what it learns (usage)."""

    public_model: str
    upstream_model: str
    stream: bool = False
    include_usage: bool = False  # the client asked for the usage chunk
    usage: Usage | None = None
    carried: dict[str, bytes] = field(default_factory=dict)  # engine.carry: original tool-call id → state
    row: ModelRow | None = None  # the model's catalog row, for codecs that lower catalog facts (thinking)
    finish_reasons: Mapping[str, str] = field(default_factory=dict)  # the spec's upstream → OpenAI table
    created: int = 0  # unix time the request was lowered: `created` for wires whose answers carry none


def finish_of(reason: str | None, call: Call, has_calls: bool, provider: str) -> str | UpstreamError:
    """An upstream finish reason → OpenAI's, by the provider spec's `finish_reasons` table (unlisted
    reasons are `stop`). `stop` on an answer that made tool calls is `tool_calls`; `content_filter` is the
    answer stopped by the provider's filter, raised as an `answer_blocked` error that routes.toml's
    content-filter rule answers."""
    mapped = call.finish_reasons.get(reason or "", "stop")
    if mapped == "content_filter":
        message = f"{provider} stopped the answer ({reason})."
        return UpstreamError(message=message, type="answer_blocked", code=reason, status=400)
    return "tool_calls" if mapped == "stop" and has_calls else mapped


class Wire(Protocol):
    """A codec may also name a `carrier` family (a class attribute, e.g. `carrier = "gemini"`): it then
    packs state into the tool-call ids it raises (`engine.carry.pack`) and finds that state again in
    `Call.carried` when lowering. Codecs without one get every packed id stripped."""

    name: str
    shape: str  # the API shape spoken upstream: "chat" or "responses"
    accepts: str  # the shape `lower` takes: "chat" (canonical), or the client's own for a passthrough

    def lower(self, body: JSON, call: Call) -> Lowered:
        """Canonical (chat) request, already mapped by the provider's spec → this wire's request."""
        ...

    def raise_json(self, doc: JSON, call: Call) -> JSON | UpstreamError:
        """This wire's answer → a `chat.completion`; records `call.usage`. A 200 answer that is an error
        in disguise (a blocked prompt, a failed response) comes back as its UpstreamError instead."""
        ...

    def raise_stream(self, events: AsyncIterator[Event], call: Call) -> AsyncIterator[StreamItem | UpstreamError]:
        """This wire's SSE events → `chat.completion.chunk`s; raises `StreamBroken` on a cut stream.
        An error the upstream reports in the stream is yielded as an UpstreamError, and ends it. The proxy
        looks at the first item before it commits the HTTP status: an error there becomes an error answer."""
        ...

    def error_of(self, body: bytes) -> UpstreamError:
        """An upstream error body (any status) → its normalized fields."""
        ...


class NoCodec(LookupError):
    """The wire has no codec for the client shape (a media operation its provider family does not speak)."""


# Client shapes every wire serves: natively, or bridged over the canonical chat shape.
BRIDGED_SHAPES = frozenset({"chat", "responses"})


def codec_for(wire: Wire, client_shape: str) -> Wire:
    """The codec that serves `client_shape` over `wire`: the wire's native passthrough when the client
    already speaks what the wire speaks; the wire itself for chat and for Responses bridged over chat; or
    one of the wire's `siblings` (a mapping of client shape → codec: its family's embeddings, speech...)."""
    if wire.shape == client_shape:
        native: Wire | None = getattr(wire, "native", None)
        return native or wire
    if client_shape in BRIDGED_SHAPES:
        return wire
    sibling: Wire | None = getattr(wire, "siblings", {}).get(client_shape)
    if sibling is None:
        raise NoCodec(f"the {wire.name} wire has no codec for {client_shape}")
    return sibling


def openai_error_of(body: bytes) -> UpstreamError:
    """Read the error shapes OpenAI-compatible servers use: `{"error": {...}}`, `{"error": "..."}`,
    `{"message": ...}` and FastAPI's `{"detail": ...}`. Unreadable bodies give an empty message."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return UpstreamError(message="")
    return error_from_doc(doc)


def error_from_doc(doc: Any) -> UpstreamError:
    if isinstance(doc, list) and doc:
        doc = doc[0]
    if not isinstance(doc, dict):
        return UpstreamError(message="")
    keys = key_names(doc)
    err = doc.get("error", doc)
    if isinstance(err, str):  # `{"error": "...", "code": ...}` (xAI and others)
        return UpstreamError(message=err, code=_code(doc.get("code")), type=_str(doc.get("type")), keys=keys)
    if not isinstance(err, dict):
        return UpstreamError(message="", keys=keys)
    message = err.get("message") or err.get("detail") or ""
    if not isinstance(message, str):
        message = msgspec.json.encode(message).decode()
    return UpstreamError(
        message=message,
        type=_str(err.get("type")),
        code=_code(err.get("code")),
        param=_str(err.get("param")),
        keys=keys,
    )


def key_name(name: str) -> str:
    """A key's name in every spelling at once: `inner_error`, `innerError`, `inner-error` → `innererror`."""
    return name.lower().replace("_", "").replace("-", "")


def key_names(doc: Any, depth: int = 6) -> tuple[str, ...]:
    """Every key name in an error body, lower-cased without `_` and `-`, for error rules' `has` (only error
    bodies are walked, and only so deep: they are small)."""
    found: set[str] = set()
    stack = [(doc, 0)]
    while stack:
        node, level = stack.pop()
        if level > depth:
            continue
        if isinstance(node, dict):
            for key, value in node.items():
                found.add(key_name(str(key)))
                stack.append((value, level + 1))
        elif isinstance(node, list):
            stack.extend((item, level + 1) for item in node[:32])
    return tuple(sorted(found))


def _code(value: Any) -> str | None:
    """An error code is an identifier; a bare number (OpenRouter's 403, Azure's "429") only repeats the status."""
    code = _str(value)
    return None if code is None or code.isdigit() else code


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return str(value)
