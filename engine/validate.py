"""Validate: a client request is checked against OpenAI's request schema before anything else happens.

The models describe only what must hold for the request to make sense (types, required fields, ranges);
unknown fields are allowed and pass through untouched, because the validated objects are thrown away:
the engine forwards the client's own JSON, not a re-serialization of these models.
A failure becomes a 400 whose `param` is the path into the request (`messages[2].tool_calls[0].id`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

import msgspec
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic needs typing_extensions' TypedDict before Python 3.12

from engine.errors import GatewayError, invalid_request


@with_config(ConfigDict(strict=True))
class Loose(TypedDict):
    """The base of every request shape: strict types, unknown keys ignored (they pass through untouched).

    TypedDicts rather than BaseModels: validating into plain dicts skips building a model object per message,
    tool and part, which made validation of a 600 KB agent conversation cost ~30 ns per byte, several times
    what parsing it does (bench/inprocess.py). The checks and their error locations are the same."""


class TextPart(Loose):
    type: Literal["text"]
    text: str


class ImageURL(Loose):
    url: str
    detail: NotRequired[Literal["auto", "low", "high"] | None]


class ImagePart(Loose):
    type: Literal["image_url"]
    image_url: ImageURL


class AudioPart(Loose):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class FilePart(Loose):
    type: Literal["file"]
    file: dict[str, Any]


class RefusalPart(Loose):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


class SystemMessage(Loose):
    role: Literal["system"]
    content: str | list[TextPart]


class DeveloperMessage(Loose):
    role: Literal["developer"]
    content: str | list[TextPart]


class UserMessage(Loose):
    role: Literal["user"]
    content: str | list[UserPart]


class FunctionCall(Loose):
    name: str
    arguments: str


class ToolCall(Loose):
    id: str
    type: NotRequired[Literal["function"]]
    function: FunctionCall


class AssistantMessage(Loose):
    role: Literal["assistant"]
    content: NotRequired[str | list[AssistantPart] | None]
    tool_calls: NotRequired[list[ToolCall] | None]


class ToolMessage(Loose):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


class FunctionMessage(Loose):  # deprecated but still valid on OpenAI's wire
    role: Literal["function"]
    name: str
    content: str | None


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]
Name = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class FunctionDefinition(Loose):
    name: Name
    description: NotRequired[str | None]
    parameters: NotRequired[dict[str, Any] | None]
    strict: NotRequired[bool | None]


class FunctionTool(Loose):
    type: Literal["function"]
    function: FunctionDefinition


class CustomTool(Loose):
    type: Literal["custom"]
    custom: dict[str, Any]


Tool = Annotated[FunctionTool | CustomTool, Field(discriminator="type")]


class NamedFunction(Loose):
    name: str


class NamedToolChoice(Loose):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(Loose):
    include_usage: NotRequired[bool | None]


class JSONSchemaFormat(Loose):
    name: Name
    schema: NotRequired[dict[str, Any] | None]
    strict: NotRequired[bool | None]


class ResponseFormatText(Loose):
    type: Literal["text"]


class ResponseFormatJSONObject(Loose):
    type: Literal["json_object"]


class ResponseFormatJSONSchema(Loose):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]


class ChatCompletionRequest(Loose):
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    stream: NotRequired[bool | None]
    stream_options: NotRequired[StreamOptions | None]
    tools: NotRequired[list[Tool] | None]
    tool_choice: NotRequired[Literal["none", "auto", "required"] | NamedToolChoice | dict[str, Any] | None]
    parallel_tool_calls: NotRequired[bool | None]
    response_format: NotRequired[ResponseFormat | None]
    reasoning_effort: NotRequired[str | None]
    max_tokens: NotRequired[Annotated[int, Field(ge=1)] | None]
    max_completion_tokens: NotRequired[Annotated[int, Field(ge=1)] | None]
    n: NotRequired[Annotated[int, Field(ge=1, le=128)] | None]
    temperature: NotRequired[Annotated[float, Field(ge=0, le=2)] | None]
    top_p: NotRequired[Annotated[float, Field(ge=0, le=1)] | None]
    presence_penalty: NotRequired[Annotated[float, Field(ge=-2, le=2)] | None]
    frequency_penalty: NotRequired[Annotated[float, Field(ge=-2, le=2)] | None]
    stop: NotRequired[str | list[str] | None]
    logprobs: NotRequired[bool | None]
    top_logprobs: NotRequired[Annotated[int, Field(ge=0, le=20)] | None]


class ResponsesTool(Loose):
    type: str


class ResponsesReasoning(Loose):
    effort: NotRequired[str | None]


class ResponsesRequest(Loose):
    """What `/responses` requires; input items are checked where they are converted or by the provider."""

    model: Annotated[str, Field(min_length=1)]
    input: NotRequired[str | list[dict[str, Any]] | None]
    instructions: NotRequired[str | None]
    stream: NotRequired[bool | None]
    tools: NotRequired[list[ResponsesTool] | None]
    reasoning: NotRequired[ResponsesReasoning | None]
    max_output_tokens: NotRequired[Annotated[int, Field(ge=16)] | None]
    temperature: NotRequired[Annotated[float, Field(ge=0, le=2)] | None]
    top_p: NotRequired[Annotated[float, Field(ge=0, le=1)] | None]
    store: NotRequired[bool | None]


_CHAT = TypeAdapter(ChatCompletionRequest)
_RESPONSES = TypeAdapter(ResponsesRequest)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    if not raw.strip():
        raise invalid_request("The request body is empty; send a JSON object.")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise invalid_request(
            f"We could not parse the JSON body of your request ({exc}). "
            "Send valid JSON with `Content-Type: application/json`."
        ) from None
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    return body


def validate_chat(body: dict[str, Any]) -> None:
    _validate(_CHAT, body)


def validate_responses(body: dict[str, Any]) -> None:
    _validate(_RESPONSES, body)
    if body.get("input") is None and not body.get("previous_response_id") and not body.get("conversation"):
        raise invalid_request("Missing required parameter: 'input'.", param="input")


def _validate(adapter: TypeAdapter[Any], body: dict[str, Any]) -> None:
    try:
        adapter.validate_python(body)
    except ValidationError as exc:
        raise _to_gateway_error(exc.errors(include_url=False), body) from None


def _to_gateway_error(errors: list[Any], body: dict[str, Any]) -> GatewayError:
    """The most specific problem (deepest in the JSON), phrased for the caller; where a union's
    alternatives all fail at the same place, their reasons are listed together."""
    first = max(errors, key=lambda e: len(e["loc"]))
    param = _param(first["loc"], body)
    if first["type"] == "missing":
        return invalid_request(f"Missing required parameter: '{param}'.", param=param)
    reasons: list[str] = []
    for error in errors:
        reason = error["msg"][0].lower() + error["msg"][1:]
        if _param(error["loc"], body) == param and reason not in reasons:
            reasons.append(reason)
    return invalid_request(
        f"Invalid value for '{param}': {'; or '.join(reasons)}.",
        param=param,
        code="invalid_type" if first["type"].endswith("_type") else "invalid_value",
    )


def _param(loc: tuple[Any, ...], body: Any) -> str:
    """Pydantic's error location with union-member labels removed: the path a user sees in their JSON."""
    path = ""
    node = body
    last = len(loc) - 1
    for i, part in enumerate(loc):
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            path += f"[{part}]"
            node = node[part]
            continue
        if isinstance(node, dict) and isinstance(part, str) and (part in node or i == last):
            # present, or the missing field being reported
            path += f".{part}" if path else part
            node = node.get(part)
            continue
        # anything else is a union label such as 'user' or 'list[...]': not part of the user's JSON
    return path
