"""Bad requests get a 400 that names the mistake where the client made it, never a 500.

1. Validation errors name paths in the client's own JSON (`messages[0].content`), never pydantic's union
   labels (`messages[0].content.str`), on every validated route.
2. `/responses` bridged over chat (a chat-only provider) type-checks every field the bridge reads, and names
   it as the client wrote it (`input[0].content[0].text`).
3. JSON nested deeper than the configured bound is a 400 `json_too_deep`, as is JSON deeper than the parser
   can go at all.
4. `/responses` passed through to a provider that speaks it natively refuses the same malformed input items
   with the same 400s as the bridge, and passes the item and part types only a native provider takes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from engine.errors import GatewayError
from engine.validate import parse_json_object, validate_chat, validate_responses
from engine.validate_media import validate_embeddings, validate_images, validate_speech, validate_video
from tests.inprocess import InProcess

CHAT = "/external/v1/chat/completions"
RESPONSES = "/external/v1/responses"
HELLO = [{"role": "user", "content": "Say hello."}]
BRIDGED = "meta-llama/llama-3.3-70b"  # served by chat-only providers: /responses goes over the bridge
NATIVE = "openai/gpt-4.1"  # served over OpenAI's Responses wire: /responses is passed through


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "openai/gpt-4.1", "messages": HELLO} | fields


def refusal(validate: Callable[[dict[str, Any]], None], body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        validate(body)
    return caught.value


# ---------------------------------------------------------------- 1. params are the client's own paths

PARAMS = [
    ("content-type", validate_chat, chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    # a key of the client's named like a union label must not be mistaken for one
    (
        "label-lookalike",
        validate_chat,
        chat(messages=[{"role": "user", "content": 5, "user": {"content": 1}, "str": 1}]),
        "messages[0].content",
    ),
    (
        "part-text",
        validate_chat,
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
        "messages[0].content[0].text",
    ),
    (
        "image-url",
        validate_chat,
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}]),
        "messages[0].content[0].image_url.url",
    ),
    (
        "tool-call-name",
        validate_chat,
        chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": 5, "arguments": ""}}]}]),
        "messages[0].tool_calls[0].function.name",
    ),
    ("bad-role", validate_chat, chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    ("no-role", validate_chat, chat(messages=[{"content": "x"}]), "messages[0].role"),
    ("stop", validate_chat, chat(stop=5), "stop"),
    ("tool-name", validate_chat, chat(tools=[{"type": "function", "function": {}}]), "tools[0].function.name"),
    (
        "schema-name",
        validate_chat,
        chat(response_format={"type": "json_schema", "json_schema": {"name": "a b"}}),
        "response_format.json_schema.name",
    ),
    ("responses-input", validate_responses, {"model": "m", "input": 5}, "input"),
    ("embeddings-token", validate_embeddings, {"model": "m", "input": [[1, "a"]]}, "input[0][1]"),
    ("images-n", validate_images, {"model": "m", "prompt": "p", "n": "two"}, "n"),
    ("speech-voice", validate_speech, {"model": "m", "input": "x", "voice": {"id": 4}}, "voice.id"),
    ("video-seconds", validate_video, {"model": "m", "prompt": "p", "seconds": 5}, "seconds"),
]


@pytest.mark.parametrize(("validate", "body", "param"), [p[1:] for p in PARAMS], ids=[p[0] for p in PARAMS])
def test_validation_errors_name_paths_in_the_clients_request(
    validate: Callable[[dict[str, Any]], None], body: dict[str, Any], param: str
) -> None:
    error = refusal(validate, body)
    assert (error.status, error.type, error.param) == (400, "invalid_request_error", param)
    assert f"'{param}'" in error.message


def test_a_type_error_says_what_was_expected_and_what_came() -> None:
    error = refusal(validate_chat, chat(stop=5))
    assert error.message == "Invalid type for 'stop': expected a string or an array, but got an integer instead."
    assert error.code == "invalid_type"


def test_a_bad_role_lists_the_roles() -> None:
    error = refusal(validate_chat, chat(messages=[{"role": "wizard", "content": "x"}]))
    assert "'wizard'" in error.message and "'assistant'" in error.message and error.code == "invalid_value"


# ---------------------------------------------------------------- 2. the /responses bridge over chat


def message(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


BRIDGE = [
    ("content-number", {"input": message(5)}, "input[0].content"),
    ("text-number", {"input": message([{"type": "input_text", "text": 5}])}, "input[0].content[0].text"),
    ("text-missing", {"input": message([{"type": "input_text"}])}, "input[0].content[0].text"),
    ("part-not-object", {"input": message(["hi"])}, "input[0].content[0]"),
    ("part-type-number", {"input": message([{"type": 3}])}, "input[0].content[0].type"),
    (
        "image-url-number",
        {"input": message([{"type": "input_image", "image_url": 5}])},
        "input[0].content[0].image_url",
    ),
    ("content-missing", {"input": [{"role": "user"}]}, "input[0].content"),
    ("item-not-object", {"input": [5]}, "input[0]"),
    ("call-name-number", {"input": [{"type": "function_call", "call_id": "c", "name": 5}]}, "input[0].name"),
    ("call-id-missing", {"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
    ("output-call-id", {"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    (
        "output-part-text",
        {"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": 1}]}]},
        "input[0].output[0].text",
    ),
    ("tool-name", {"input": "hi", "tools": [{"type": "function", "name": 5}]}, "tools[0].name"),
    (
        "tool-parameters",
        {"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": []}]},
        "tools[0].parameters",
    ),
    ("tool-choice", {"input": "hi", "tool_choice": 5}, "tool_choice"),
    ("text-not-object", {"input": "hi", "text": "json"}, "text"),
    ("format-type", {"input": "hi", "text": {"format": {"type": 5}}}, "text.format.type"),
    ("schema-name", {"input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
    ("passthrough", {"input": "hi", "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
]


@pytest.mark.parametrize(("fields", "param"), [b[1:] for b in BRIDGE], ids=[b[0] for b in BRIDGE])
def test_the_responses_bridge_names_the_clients_field(gw: InProcess, fields: dict[str, Any], param: str) -> None:
    response = gw.post(RESPONSES, json={"model": BRIDGED, **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    assert gw.upstreams.hits() == 0, "nothing invalid may reach the provider"


def test_a_valid_bridged_request_still_goes_through(gw: InProcess) -> None:
    content = [{"type": "input_text", "text": "Say "}, {"type": "input_text", "text": "hello."}]
    response = gw.post(RESPONSES, json={"model": BRIDGED, "input": message(content)})
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "response"


# ---------------------------------------------------------------- 4. the native /responses passthrough

INPUT_MISTAKES = [b for b in BRIDGE if b[2].startswith("input")] + [
    ("role-unknown", {"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    ("type-number", {"input": [{"type": 5, "role": "user", "content": "x"}]}, "input[0].type"),
    (
        "detail-number",
        {"input": message([{"type": "input_image", "image_url": "u", "detail": 1}])},
        "input[0].content[0].detail",
    ),
    ("file-data-number", {"input": message([{"type": "input_file", "file_data": 1}])}, "input[0].content[0].file_data"),
    (
        "arguments-number",
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
        "input[0].arguments",
    ),
    (
        "output-part-not-object",
        {"input": [{"type": "function_call_output", "call_id": "c", "output": [1]}]},
        "input[0].output[0]",
    ),
    (
        "second-item",
        {"input": [*message("fine"), {"role": "user", "content": [{"type": "input_text", "text": None}]}]},
        "input[1].content[0].text",
    ),
]


@pytest.mark.parametrize(("fields", "param"), [m[1:] for m in INPUT_MISTAKES], ids=[m[0] for m in INPUT_MISTAKES])
def test_the_native_passthrough_refuses_what_the_bridge_refuses(
    gw: InProcess, fields: dict[str, Any], param: str
) -> None:
    """`content: 5` never reaches a provider that speaks /responses, and is told the same as over the bridge."""
    native = gw.post(RESPONSES, json={"model": NATIVE, **fields})
    bridged = gw.post(RESPONSES, json={"model": BRIDGED, **fields})
    assert native.status_code == 400, native.text
    assert native.json()["error"]["param"] == param, native.json()
    assert native.json() == bridged.json()
    assert gw.upstreams.hits() == 0, "nothing invalid may reach the provider"


NATIVE_ONLY = [
    ("item-reference", [{"type": "item_reference", "id": "msg_1"}, *message("Say hello.")]),
    ("reasoning-item", [{"type": "reasoning", "id": "rs_1", "summary": []}, *message("Say hello.")]),
    ("image-by-file-id", message([{"type": "input_image", "file_id": "file-1"}, {"type": "input_text", "text": "?"}])),
    ("refusal-part", [{"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}, *message("Why?")]),
    (
        "output-as-parts",
        [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "u"}]}],
    ),
]


@pytest.mark.parametrize("items", [n[1] for n in NATIVE_ONLY], ids=[n[0] for n in NATIVE_ONLY])
def test_the_native_passthrough_takes_what_only_a_native_provider_can(gw: InProcess, items: list[Any]) -> None:
    response = gw.post(RESPONSES, json={"model": NATIVE, "input": items})
    assert response.status_code == 200, response.text
    assert gw.upstreams.hits() == 1


# ---------------------------------------------------------------- 3. how deep JSON may nest


def nested(depth: int) -> bytes:
    """A chat request whose body nests `depth` levels deep (the body itself is level 1)."""
    inner = b"[" * (depth - 1) + b"]" * (depth - 1)
    return b'{"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "x": ' + inner + b"}"


def objects(depth: int) -> bytes:
    """Objects in objects, the innermost holding only a string (a dict the collector does not track)."""
    return b'{"a": ' * (depth - 1) + b'{"leaf": "x"}' + b"}" * (depth - 1)


@pytest.mark.parametrize("build", [nested, objects], ids=["arrays", "objects"])
def test_json_as_deep_as_the_bound_parses_and_one_level_more_is_refused(build: Callable[[int], bytes]) -> None:
    assert isinstance(parse_json_object(build(64), max_depth=64), dict)
    with pytest.raises(GatewayError) as caught:
        parse_json_object(build(65), max_depth=64)
    assert (caught.value.status, caught.value.code) == (400, "json_too_deep")
    assert "64 levels" in caught.value.message


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_json_deeper_than_the_parser_goes_is_a_400_not_a_500(gw: InProcess, depth: int) -> None:
    response = gw.post(CHAT, content=nested(depth), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "json_too_deep"


def test_the_depth_bound_is_routes_toml_data(gw: InProcess) -> None:
    bound = gw.gateway.specs.routes.gateway.max_json_depth
    response = gw.post(CHAT, content=nested(bound + 1), headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "json_too_deep"
    assert f"{bound} levels" in response.json()["error"]["message"]
    assert gw.post(CHAT, content=nested(bound), headers={"content-type": "application/json"}).status_code == 200


# ---------------------------------------------------------------- 4. the content type

TRANSCRIPTIONS = "/external/v1/audio/transcriptions"
VIDEOS = "/external/v1/videos"
CONTENT_TYPES = [
    # what the SDKs send, with parameters, a vendor +json type, and no type at all are read as JSON
    (CHAT, "application/json", 200),
    (CHAT, "application/json; charset=utf-8", 200),
    (CHAT, "Application/JSON", 200),
    (CHAT, "application/vnd.example+json", 200),
    (CHAT, None, 200),
    (CHAT, "text/plain", 415),
    (CHAT, "application/x-www-form-urlencoded", 415),
    (CHAT, "multipart/form-data; boundary=x", 415),
    (RESPONSES, "text/plain;charset=UTF-8", 415),  # fetch() with a string body
    (VIDEOS, "application/json", 200),  # a multipart row takes JSON too: a form without files
    (TRANSCRIPTIONS, "text/plain", 415),
]


@pytest.mark.parametrize(
    ("path", "content_type", "status"), CONTENT_TYPES, ids=[f"{p.rsplit('/', 1)[1]}-{c}" for p, c, _ in CONTENT_TYPES]
)
def test_the_content_type_decides_how_a_body_is_read(
    gw: InProcess, path: str, content_type: str | None, status: int
) -> None:
    body = {"model": "openai/gpt-4.1", "messages": HELLO, "input": "Say hello."}
    if path == VIDEOS:
        body = {"model": "openai/sora-2", "prompt": "A fox in the snow"}
    headers = {"content-type": content_type} if content_type is not None else {}
    response = gw.post(path, content=json.dumps(body).encode(), headers=headers)
    assert content_type is not None or "content-type" not in response.request.headers
    assert response.status_code == status, response.text
    if status == 415:
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "unsupported_media_type")
        assert gw.upstreams.hits() == 0


def test_a_curl_d_body_is_told_how_to_fix_it(gw: InProcess) -> None:
    response = gw.post(CHAT, content=json.dumps(chat()), headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert "-H 'Content-Type: application/json'" in response.json()["error"]["message"]
