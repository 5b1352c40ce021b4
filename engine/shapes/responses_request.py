"""The Responses client shape, inbound: a `/responses` request → the canonical Chat Completions request,
for providers that do not speak Responses. Features that need server-side state, or hosted tools, are
refused with a 400 that says so rather than silently lost."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.errors import GatewayError
from engine.validate import invalid_type, validate_chat
from engine.wires.base import JSON

# Responses-only features a chat wire cannot carry: refused with a message, never silently lost.
_STATEFUL = {
    "previous_response_id": "stored conversation state",
    "conversation": "stored conversations",
    "background": "background responses",
    "prompt": "stored prompt templates",
}
_CHAT_PASSTHROUGH = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
    "top_logprobs",
)


_ROLES = ("user", "assistant", "system", "developer")
_TEXTS = ("input_text", "output_text", "text")  # the part types that carry `text`
_FILE_KEYS = ("file_id", "file_data", "filename")


def _refuse(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="unsupported_parameter")


def _object(value: Any, param: str) -> JSON:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    return value


def _string(holder: JSON, key: str, param: str, default: str | None = None) -> str:
    """`holder[key]` as a string: a missing one is `default` (or a 400 when there is none), any other type a 400."""
    value = holder.get(key, default)
    if value is None and default is None:
        raise GatewayError(400, f"Missing required parameter: '{param}.{key}'.", param=f"{param}.{key}")
    if not isinstance(value, str):
        raise invalid_type(f"{param}.{key}", "a string", value)
    return value


def _optional(holder: JSON, key: str, param: str, kind: type, expected: str) -> Any:
    value = holder.get(key)
    if value is not None and not isinstance(value, kind):
        raise invalid_type(f"{param}.{key}", expected, value)
    return value


def _chat_part(part: Any, param: str) -> JSON:
    part = _object(part, param)
    kind = _string(part, "type", param)
    if kind in _TEXTS:
        return {"type": "text", "text": _string(part, "text", param)}
    if kind == "input_image":
        url = _optional(part, "image_url", param, str, "a string (a URL or a data URL)")
        if not url:
            raise _refuse(
                param,
                "Only `input_image` parts with an `image_url` (URL or data URL) can be sent to this "
                "model; `file_id` images need a provider that stores files.",
            )
        detail = _optional(part, "detail", param, str, "a string") or "auto"
        return {"type": "image_url", "image_url": {"url": url, "detail": detail}}
    if kind == "input_file":
        file = {k: _optional(part, k, param, str, "a string") for k in _FILE_KEYS if k in part}
        return {"type": "file", "file": file}
    raise _refuse(param, f"Content parts of type `{kind}` cannot be sent to this model.")


def _chat_content(item: JSON, param: str) -> Any:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        if content is None:
            raise GatewayError(400, f"Missing required parameter: '{param}.content'.", param=f"{param}.content")
        raise invalid_type(f"{param}.content", "a string or an array of content parts", content)
    parts = [_chat_part(p, f"{param}.content[{i}]") for i, p in enumerate(content)]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _output_text(item: JSON, param: str) -> str:
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for i, part in enumerate(output):
            if not isinstance(part, dict):
                raise invalid_type(f"{param}.output[{i}]", "an object", part)
            texts.append(_string(part, "text", f"{param}.output[{i}]", default=""))
        return "".join(texts)
    return msgspec.json.encode(output).decode()


def input_to_messages(body: JSON) -> list[JSON]:
    """The input items as chat messages; every field the bridge reads is type-checked here, so a mistake is a
    400 naming its place in the client's own request (`input[2].content[0].text`), not a failure further on."""
    messages: list[JSON] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for i, item in enumerate(items or []):
        param = f"input[{i}]"
        item = _object(item, param)
        kind = _string(item, "type", param, default="message")
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise _refuse(f"{param}.role", f"Unknown message role `{role}`.")
            messages.append({"role": role, "content": _chat_content(item, param)})
        elif kind == "function_call":
            call = {
                "id": _string(item, "call_id", param),
                "type": "function",
                "function": {"name": _string(item, "name", param), "arguments": _string(item, "arguments", param, "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not isinstance(last.get("content"), list):
                last.setdefault("tool_calls", []).append(call)  # parallel calls share one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = _string(item, "call_id", param)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": _output_text(item, param)})
        elif kind == "reasoning":
            continue  # encrypted reasoning belongs to the provider that made it; chat wires cannot replay it
        else:
            raise _refuse(param, f"Input items of type `{kind}` cannot be sent to this model.")
    return messages


# ------------------------------------------------------------------ the native passthrough's checks


def _check_part(part: Any, param: str) -> None:
    """`_chat_part`'s type checks, converting nothing and refusing no part type: a native provider takes
    more kinds of parts than the bridge can carry."""
    part = _object(part, param)
    kind = _string(part, "type", param)
    if kind in _TEXTS:
        _string(part, "text", param)
    elif kind == "input_image":
        _optional(part, "image_url", param, str, "a string (a URL or a data URL)")
        _optional(part, "detail", param, str, "a string")
    elif kind == "input_file":
        for key in _FILE_KEYS:
            _optional(part, key, param, str, "a string")


def _check_content(item: JSON, param: str) -> None:
    content = item.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        if content is None:
            raise GatewayError(400, f"Missing required parameter: '{param}.content'.", param=f"{param}.content")
        raise invalid_type(f"{param}.content", "a string or an array of content parts", content)
    for i, part in enumerate(content):
        _check_part(part, f"{param}.content[{i}]")


def _check_item(item: Any, param: str) -> None:
    """`input_to_messages`' type checks of one item, converting nothing; raises its 400."""
    item = _object(item, param)
    kind = _string(item, "type", param, default="message")
    if kind == "message":
        if item.get("role") not in _ROLES:
            raise _refuse(f"{param}.role", f"Unknown message role `{item.get('role')}`.")
        _check_content(item, param)
    elif kind == "function_call":
        _string(item, "call_id", param)
        _string(item, "name", param)
        _string(item, "arguments", param, "")
    elif kind == "function_call_output":
        _string(item, "call_id", param)
        output = item.get("output")
        if isinstance(output, list):
            for j, part in enumerate(output):
                _string(_object(part, f"{param}.output[{j}]"), "text", f"{param}.output[{j}]", default="")


def _fine_part(part: Any) -> bool:
    """Whether `_check_part` would pass `part` (without building the param it would name)."""
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    if kind in _TEXTS:
        return isinstance(part.get("text"), str)
    if kind == "input_image":
        url, detail = part.get("image_url"), part.get("detail")
        return (url is None or isinstance(url, str)) and (detail is None or isinstance(detail, str))
    if kind == "input_file":
        return all(isinstance(part.get(k), str | None) for k in _FILE_KEYS)
    return isinstance(kind, str)


def _fine_item(item: Any) -> bool:
    """Whether `_check_item` would pass `item`: the same tests, inline, for the common item kinds."""
    if not isinstance(item, dict):
        return False
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        if item.get("role") not in _ROLES:
            return False
        return isinstance(content, str) or (isinstance(content, list) and all(map(_fine_part, content)))
    if kind == "function_call":
        return (
            isinstance(item.get("call_id"), str)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("arguments", ""), str)
        )
    if kind == "function_call_output":
        output = item.get("output")
        return isinstance(item.get("call_id"), str) and (
            not isinstance(output, list)
            or all(isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in output)
        )
    return isinstance(kind, str)


def check_input(body: JSON) -> None:
    """The input items of a `/responses` request passed through to a provider that speaks it, held to the
    bridge's type checks (`input_to_messages`) with the same 400s, so `content: 5` never reaches the
    upstream nor a codec. Item and part types the bridge cannot carry pass: the provider may take them.
    An item that passes the inline tests costs no param string; one that fails is checked again by
    `_check_item`, which names the field in its 400. bench/responses_input.py measures it."""
    items = body.get("input")
    if not isinstance(items, list):
        return  # a string, or none (`validate_responses` checked which)
    for i, item in enumerate(items):
        if not _fine_item(item):
            _check_item(item, f"input[{i}]")


def _chat_tool(tool: Any, index: int) -> JSON:
    param = f"tools[{index}]"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise _refuse(param, f"The hosted tool `{kind}` is not available for this model; only function tools are.")
    function: JSON = {"name": _string(tool, "name", param)}
    for key, kind, expected in (
        ("description", str, "a string"),
        ("parameters", dict, "an object"),
        ("strict", bool, "a boolean"),
    ):
        value = _optional(tool, key, param, kind, expected)
        if value is not None:
            function[key] = value
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": _string(choice, "name", "tool_choice")}}
    if choice is not None and not isinstance(choice, (str, dict)):
        raise invalid_type("tool_choice", "a string or an object", choice)
    return choice


def _chat_response_format(text: Any) -> JSON | None:
    if text is None:
        return None
    fmt = _object(text, "text").get("format")
    if fmt is None:
        return None
    fmt = _object(fmt, "text.format")
    kind = _string(fmt, "type", "text.format", default="text")
    if kind == "json_schema":
        schema: JSON = {"name": _string(fmt, "name", "text.format")}
        for key, typ, expected in (
            ("description", str, "a string"),
            ("schema", dict, "an object"),
            ("strict", bool, "a boolean"),
        ):
            if key in fmt:
                schema[key] = _optional(fmt, key, "text.format", typ, expected)
        return {"type": "json_schema", "json_schema": schema}
    return {"type": kind}


# Where a field of the bridged chat request came from in the client's Responses request.
_ORIGIN = {
    "messages": "input",
    "tools": "tools",
    "max_tokens": "max_output_tokens",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
}


def _checked(chat: JSON) -> JSON:
    """The bridged request must be a valid chat request, as every chat codec assumes. The checks above name
    the client's own fields; should one slip through, the 400 still names the Responses field it came from."""
    try:
        validate_chat(chat)
    except GatewayError as error:
        if error.param is not None:
            head = error.param.split(".", 1)[0].split("[", 1)[0]
            origin = _ORIGIN.get(head, error.param)
            error.message = error.message.replace(f"'{error.param}'", f"'{origin}'")
            error.param = origin
        raise
    return chat


def to_chat(body: JSON) -> JSON:
    """A Responses request → the equivalent Chat Completions request (the canonical shape)."""
    for field, what in _STATEFUL.items():
        if body.get(field):
            raise _refuse(
                field,
                f"`{field}` ({what}) needs a provider that keeps state; this model is served "
                "statelessly. Send the whole conversation in `input` instead.",
            )
    chat: JSON = {"model": body["model"], "messages": input_to_messages(body)}
    if body.get("tools"):
        chat["tools"] = [_chat_tool(t, i) for i, t in enumerate(body["tools"])]
    if "tool_choice" in body:
        chat["tool_choice"] = _chat_tool_choice(body["tool_choice"])
    response_format = _chat_response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if isinstance(body.get("max_output_tokens"), int):
        chat["max_tokens"] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if effort:
        chat["reasoning_effort"] = effort
    for field in _CHAT_PASSTHROUGH:
        if field in body:
            chat[field] = body[field]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # response.completed always carries usage
    return _checked(chat)


def capability_view(body: JSON) -> JSON:
    """The parts of a Responses request that capability checks read, in chat terms."""
    reasoning = body.get("reasoning")
    return {
        "tools": body.get("tools"),
        "stream": body.get("stream"),
        "reasoning_effort": reasoning.get("effort") if isinstance(reasoning, dict) else None,
    }
