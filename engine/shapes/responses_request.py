"""The Responses client shape, inbound: a `/responses` request → the canonical Chat Completions request,
for providers that do not speak Responses. Features that need server-side state, or hosted tools, are
refused with a 400 that says so rather than silently lost."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.errors import GatewayError
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


def _refuse(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="unsupported_parameter")


def _chat_part(part: Any, param: str) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image":
        if not part.get("image_url"):
            raise _refuse(
                param,
                "Only `input_image` parts with an `image_url` (URL or data URL) can be sent to this "
                "model; `file_id` images need a provider that stores files.",
            )
        return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")}}
    if kind == "input_file":
        return {"type": "file", "file": {k: part[k] for k in ("file_id", "file_data", "filename") if k in part}}
    raise _refuse(param, f"Content parts of type `{kind}` cannot be sent to this model.")


def _chat_content(content: Any, param: str) -> Any:
    if isinstance(content, str):
        return content
    parts = [_chat_part(p, f"{param}[{i}]") for i, p in enumerate(content or [])]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(p.get("text", "") for p in output if isinstance(p, dict))
    return msgspec.json.encode(output).decode()


def input_to_messages(body: JSON) -> list[JSON]:
    messages: list[JSON] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for i, item in enumerate(items or []):
        param = f"input[{i}]"
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _refuse(f"{param}.role", f"Unknown message role `{role}`.")
            content = _chat_content(item.get("content"), f"{param}.content")
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not isinstance(last.get("content"), list):
                last.setdefault("tool_calls", []).append(call)  # parallel calls share one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": _output_text(item.get("output"))}
            )
        elif kind == "reasoning":
            continue  # encrypted reasoning belongs to the provider that made it; chat wires cannot replay it
        else:
            raise _refuse(param, f"Input items of type `{kind}` cannot be sent to this model.")
    return messages


def _chat_tool(tool: Any, index: int) -> JSON:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise _refuse(
            f"tools[{index}]", f"The hosted tool `{kind}` is not available for this model; only function tools are."
        )
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _chat_response_format(text: Any) -> JSON | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt.get("type", "text")}


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
    return chat


def capability_view(body: JSON) -> JSON:
    """The parts of a Responses request that capability checks read, in chat terms."""
    reasoning = body.get("reasoning")
    return {
        "tools": body.get("tools"),
        "stream": body.get("stream"),
        "reasoning_effort": reasoning.get("effort") if isinstance(reasoning, dict) else None,
    }
