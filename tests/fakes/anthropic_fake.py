"""Anthropic's Messages wire, as the loopback fake speaks it (served by tests/fakes/openai_fake.py's app at
`POST /v1/messages`, with the same script and request log).

It answers like Anthropic (a `message` object, or named events from `message_start` to `message_stop`;
errors as `{"type": "error", "error": {...}}`) and refuses what Anthropic refuses where the gateway must
get it right: a missing `x-api-key` or `anthropic-version`, a missing `max_tokens`, fields the API does
not define, roles other than user/assistant, tool ids outside `[A-Za-z0-9_-]`, tool results with no
matching `tool_use`, a thinking budget out of range, sampling controls or forced tool use with thinking,
and, the rule that matters most, a tool loop whose last assistant turn lost its thinking block or had its
signature altered. Signatures are an HMAC of the thinking text, so only blocks this fake produced verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

REPLY = "Hello from the fake Claude."
THOUGHT = "The user asked about the weather, so I will call the tool."
_SECRET = b"fake-anthropic-signing-key"
_FIELDS = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "metadata",
    "thinking",
    "output_config",
}
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
USAGE = {"input_tokens": 20, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 8, "output_tokens": 9}


def sign(thinking: str) -> str:
    return base64.b64encode(hmac.new(_SECRET, thinking.encode(), hashlib.sha256).digest()).decode()


def error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}


def _invalid(message: str) -> tuple[int, dict[str, Any]]:
    return 400, error("invalid_request_error", message)


def refusal(headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """The (status, error body) Anthropic would answer, or None when the request is acceptable."""
    lower = {k.lower(): v for k, v in headers.items()}
    if not lower.get("x-api-key"):
        return 401, error("authentication_error", "x-api-key header is required")
    if lower.get("anthropic-version") != "2023-06-01":
        return _invalid("anthropic-version: header is required")
    extra = sorted(set(body) - _FIELDS)
    if extra:
        return _invalid(f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("max_tokens"), int):
        return _invalid("max_tokens: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
        return _invalid("messages: the first message must use the user role")
    for i, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            return _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
    thinking = body.get("thinking")
    thinks = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    if thinks:
        problem = _thinking_problem(body, thinking)
        if problem:
            return _invalid(problem)
    return _tool_problem(messages, thinks)


def _thinking_problem(body: dict[str, Any], thinking: dict[str, Any]) -> str | None:
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= body["max_tokens"]:
            return "`max_tokens` must be greater than `thinking.budget_tokens`"
    if body.get("temperature") not in (None, 1) or body.get("top_k") is not None:
        return "`temperature` may only be set to 1 when thinking is enabled"
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    return None


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def _tool_problem(messages: list[dict[str, Any]], thinks: bool) -> tuple[int, dict[str, Any]] | None:
    offered: set[str] = set()
    for i, message in enumerate(messages):
        blocks = _blocks(message)
        for j, block in enumerate(blocks):
            kind = block.get("type")
            if kind == "tool_use":
                if not _TOOL_ID.match(str(block.get("id"))):
                    return _invalid(f"messages.{i}.content.{j}.tool_use.id: String should match pattern")
                offered.add(block["id"])
            elif kind == "tool_result" and block.get("tool_use_id") not in offered:
                return _invalid(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks:"
                    f" {block.get('tool_use_id')}. Each `tool_result` block must have a corresponding `tool_use`"
                    " block in the previous message."
                )
            elif kind == "thinking" and block.get("signature") != sign(str(block.get("thinking"))):
                return _invalid(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
    last, before = messages[-1], messages[-2] if len(messages) > 1 else None
    in_loop = any(b.get("type") == "tool_result" for b in _blocks(last))
    if thinks and in_loop and before is not None and before.get("role") == "assistant":
        first = (_blocks(before) or [{}])[0]
        if first.get("type") not in ("thinking", "redacted_thinking"):
            return _invalid(
                f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or `redacted_thinking`, but found"
                f" `{first.get('type')}`. When `thinking` is enabled, a final `assistant` message must start with a"
                " thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks)."
            )
    return None


def _content(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The answer's content blocks and stop reason."""
    last = _blocks(body["messages"][-1])
    results = [b for b in last if b.get("type") == "tool_result"]
    thinking = body.get("thinking") or {}
    blocks: list[dict[str, Any]] = []
    if thinking.get("type") in ("enabled", "adaptive"):
        blocks.append({"type": "thinking", "thinking": THOUGHT, "signature": sign(THOUGHT)})
    tools = body.get("tools") or []
    if tools and not results and (body.get("tool_choice") or {}).get("type") != "none":
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        tool_use = {"type": "tool_use", "id": f"toolu_fake_{turn}", "name": tools[0]["name"], "input": {"city": "Oslo"}}
        return [*blocks, tool_use], "tool_use"
    if results:
        said = results[-1].get("content")
        if isinstance(said, list):
            said = "".join(p.get("text", "") for p in said)
        return [*blocks, {"type": "text", "text": f"The tool said: {said}"}], "end_turn"
    return [*blocks, {"type": "text", "text": REPLY}], "end_turn"


def message(body: dict[str, Any]) -> dict[str, Any]:
    content, stop = _content(body)
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": USAGE,
    }


def events(body: dict[str, Any]) -> list[str]:
    """The same answer as named events, split like Anthropic splits them."""
    content, stop = _content(body)
    start = {**message(body), "content": [], "stop_reason": None, "usage": {**USAGE, "output_tokens": 1}}
    out = [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]
    for index, block in enumerate(content):
        kind = block["type"]
        if kind == "thinking":
            opened = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"][:20]},
                {"type": "thinking_delta", "thinking": block["thinking"][20:]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        elif kind == "tool_use":
            opened = {**block, "input": {}}
            raw = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in ("", raw[:5], raw[5:])]
        else:
            opened = {"type": "text", "text": ""}
            deltas = [
                {"type": "text_delta", "text": block["text"][:8]},
                {"type": "text_delta", "text": block["text"][8:]},
            ]
        out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened}))
        out += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": 9},
    }
    out += [("message_delta", delta), ("message_stop", {"type": "message_stop"})]
    return [f"event: {name}\ndata: {json.dumps(data)}" for name, data in out]
