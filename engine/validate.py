"""Validate: a client request is checked against OpenAI's request schema before anything else happens.

The models describe only what must hold for the request to make sense (types, required fields, ranges);
unknown fields are allowed and pass through untouched, because the validated objects are thrown away:
the engine forwards the client's own JSON, not a re-serialization of these models.
A failure becomes a 400 whose `param` is the path into the request (`messages[2].tool_calls[0].id`).
"""

from __future__ import annotations

import gc
from itertools import compress
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


# Fields of OpenAI's requests that pass through unchecked, named beside the checked ones so that `engine check`
# knows every field a spec may touch (engine/spec/fields.py). They are kept out of the TypedDicts, where each
# would cost a lookup per validated object (per message, for the message fields). `reasoning_content` is not
# OpenAI's: the gateway answers with it, and clients send it back in their next turn.
UNCHECKED: dict[type, tuple[str, ...]] = {
    ChatCompletionRequest: (
        "seed",
        "logit_bias",
        "user",
        "service_tier",
        "store",
        "metadata",
        "prompt_cache_key",
        "safety_identifier",
        "modalities",
        "audio",
        "prediction",
        "web_search_options",
        "verbosity",
        "functions",
        "function_call",
    ),
    SystemMessage: ("name",),
    DeveloperMessage: ("name",),
    UserMessage: ("name",),
    AssistantMessage: ("name", "refusal", "audio", "function_call", "reasoning_content"),
    ResponsesRequest: (
        "previous_response_id",
        "conversation",
        "background",
        "prompt",
        "include",
        "text",
        "tool_choice",
        "parallel_tool_calls",
        "max_tool_calls",
        "metadata",
        "prompt_cache_key",
        "safety_identifier",
        "service_tier",
        "truncation",
        "user",
        "top_logprobs",
        "stream_options",
    ),
}

_CHAT = TypeAdapter(ChatCompletionRequest)
_RESPONSES = TypeAdapter(ResponsesRequest)


def parse_json_object(raw: bytes, max_depth: int | None = None) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it. `max_depth` bounds how
    deeply objects and arrays may nest (the body itself is level 1); without it, the parser's own bound holds."""
    if not raw.strip():
        raise invalid_request("The request body is empty; send a JSON object.")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise invalid_request(
            f"We could not parse the JSON body of your request ({exc}). "
            "Send valid JSON with `Content-Type: application/json`."
        ) from None
    except RecursionError:  # the parser's own bound: the interpreter's recursion limit
        raise _too_deep(max_depth) from None
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    if max_depth is not None and len(raw) > 2 * max_depth and _deeper_than(body, max_depth):
        raise _too_deep(max_depth)
    return body


def _too_deep(limit: int | None) -> GatewayError:
    bound = f"more than {limit} levels deep" if limit is not None else "too deeply"
    return invalid_request(
        f"The JSON body of your request nests objects and arrays {bound}; flatten it.", code="json_too_deep"
    )


_CONTAINER = frozenset({dict, list}).__contains__


def _deeper_than(body: dict[str, Any], limit: int) -> bool:
    """Whether containers nest more than `limit` levels deep, one level at a time. msgspec cannot be told a
    depth, so this walks the parsed body, but with no bytecode per value: `gc.get_referents` lists a whole
    level's items (a dict's values, a list's items) in C, and `map`/`compress` keep the containers among them.
    Dicts the garbage collector does not track hold only atomic values (CPython tracks a dict once a
    container is put in it), so they end their branch without being listed. Measured (bench: 600 KB agent
    body, ~150 µs, ~14 % of its parse; the 33 KB OpenCode body, ~17 µs); a body too short to nest that deep is
    not walked at all."""
    level: list[Any] = [body]
    for _ in range(limit):
        items = gc.get_referents(*filter(gc.is_tracked, level))
        level = list(compress(items, map(_CONTAINER, map(type, items))))
        if not level:
            return False
    return True


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
        raise _to_gateway_error(adapter, exc.errors(include_url=False), body) from None


def _to_gateway_error(adapter: TypeAdapter[Any], errors: list[Any], body: dict[str, Any]) -> GatewayError:
    """The most specific problem (deepest in the JSON), phrased for the caller; where a union's
    alternatives all fail at the same place, their reasons are listed together."""
    paths = [_client_path(adapter, error["loc"], body) for error in errors]
    first = max(range(len(errors)), key=lambda i: (paths[i].count(".") + paths[i].count("["), -i))
    param, kind, error = paths[first], errors[first]["type"], errors[first]
    if kind == "missing":
        return invalid_request(f"Missing required parameter: '{param}'.", param=param)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = error["ctx"]["discriminator"].strip("'")
        param = f"{param}.{field}" if param else field
        if kind == "union_tag_not_found":
            return invalid_request(f"Missing required parameter: '{param}'.", param=param)
        return invalid_request(
            f"Invalid value for '{param}': {error['ctx']['tag']!r}. Supported values are: "
            f"{error['ctx']['expected_tags']}.",
            param=param,
            code="invalid_value",
        )
    here = [e for e, path in zip(errors, paths, strict=True) if path == param]
    expected = [_EXPECTED.get(e["type"]) for e in here]
    if all(expected):
        wanted = " or ".join(dict.fromkeys(x for x in expected if x))
        return invalid_type(param, wanted, error["input"])
    reasons = list(dict.fromkeys(_reason(e) for e in here))
    return invalid_request(f"Invalid value for '{param}': {'; or '.join(reasons)}.", param=param, code="invalid_value")


# Pydantic's type errors, in the words of a JSON request.
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "none_required": "null",
}
_JSON_TYPES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}


def invalid_type(param: str, expected: str, value: Any) -> GatewayError:
    """A 400 for a value of the wrong JSON type, in OpenAI's words."""
    got = "null" if value is None else _JSON_TYPES.get(type(value), "a value of another kind")
    return invalid_request(
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.", param=param, code="invalid_type"
    )


def _reason(error: Any) -> str:
    """Pydantic's message, about "the value" rather than its "input" (a field name of several requests)."""
    message: str = error["msg"]
    if message.startswith("Input should"):
        return "the value should" + message[len("Input should") :]
    return message[0].lower() + message[1:]


# ------------------------------------------------------------------ error locations as the client's paths
#
# Pydantic's error location mixes the client's keys and indices with labels of its own: the member of a
# union that was tried (`str`, `list[...]`, `VoiceId`) or the tag of a tagged union (`user`). The labels are
# told apart by walking the validator's core schema alongside the location: a label is exactly the step
# taken at a union. Only failed requests pay for this.

_WRAPPERS = {"nullable", "default", "function-after", "function-before", "function-wrap", "json-or-python"}


def _client_path(adapter: TypeAdapter[Any], loc: tuple[Any, ...], body: Any) -> str:
    schema = adapter.core_schema
    refs = {d["ref"]: d for d in schema.get("definitions", ())} if schema["type"] == "definitions" else {}
    path, node, i = "", body, 0
    while i < len(loc):
        schema = _unwrap(schema, refs)
        part, kind = loc[i], schema.get("type") if schema else None
        i += 1
        if kind == "tagged-union":
            schema = schema["choices"].get(part)
            continue
        if kind == "union":
            schema = _member(schema["choices"], part, node, refs)
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
        node = node[part] if isinstance(node, (dict, list)) and _holds(node, part) else None
        schema = _child(schema, kind, part)
    return path


def _unwrap(schema: Any, refs: dict[str, Any]) -> Any:
    while schema is not None:
        kind = schema.get("type")
        if kind == "definitions":
            schema = schema["schema"]
        elif kind == "definition-ref":
            schema = refs.get(schema["schema_ref"])
        elif kind in _WRAPPERS and "schema" in schema:
            schema = schema["schema"]
        elif kind == "json-or-python":
            schema = schema["python_schema"]
        elif kind == "model":
            schema = schema["schema"]
        elif kind == "lax-or-strict":
            schema = schema["strict_schema"]
        else:
            return schema
    return None


_KINDS: dict[type, tuple[str, ...]] = {
    dict: ("typed-dict", "model-fields", "dict", "dataclass-args"),
    list: ("list", "tuple", "set"),
}


def _member(choices: list[Any], label: Any, node: Any, refs: dict[str, Any]) -> Any:
    """The union member a label names: its explicit label, its class name, or else the first member that
    holds the client's value's kind (an object, an array)."""
    members = [(c[0], c[1]) if isinstance(c, tuple) else (c, None) for c in choices]
    for member, name in members:
        unwrapped = _unwrap(member, refs) or {}
        cls = unwrapped.get("cls") or member.get("cls")
        if label == name or (cls is not None and label == cls.__name__):
            return member
    kinds = _KINDS.get(type(node), ())
    for member, _ in members:
        if (_unwrap(member, refs) or {}).get("type") in kinds:
            return member
    return None


def _child(schema: Any, kind: str | None, part: Any) -> Any:
    if kind in ("typed-dict", "model-fields"):
        field = schema["fields"].get(part)
        return field["schema"] if field else None
    if kind == "list":
        return schema.get("items_schema")
    if kind == "dict":
        return schema.get("values_schema")
    return None


def _holds(node: dict[str, Any] | list[Any], part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)
