"""Anthropic's Messages wire (`POST {base}/messages`), lowered from and raised to the canonical chat shape.

Lowering: system and developer messages become the top-level `system`; user content parts become
`text` / `image` (base64 or URL source) / `document` blocks; assistant tool calls become `tool_use`
blocks and tool messages `tool_result` blocks, consecutive ones merged into one user turn (Anthropic
wants turns to alternate, and every result of a turn in the turn after it). `tool_choice`, `stop`,
`parallel_tool_calls` and `user` are translated; `max_tokens` is required (the spec's mappings supply
it from the catalog row when the client sent none) and `thinking` arrives already shaped by the spec's
budget table. Every other field is dropped or refused, since Anthropic answers 400 to fields it does not
know.

Thinking across turns: with tools and thinking, Anthropic insists that the last assistant turn comes back
with its thinking blocks whole, signature included. OpenAI clients cannot carry them, so raising packs the
turn's thinking blocks into each tool-call id (`engine.carry`, family `anthropic`, on the stored backend:
blocks are too big for an id) and lowering puts them back in front of the turn's `tool_use` blocks. A
client's replayed `reasoning_content` is unsigned, so it is never sent as thinking: the carried blocks
are. When they cannot be restored (expired, or the conversation began elsewhere), the request is sent with
thinking switched off for that turn rather than refused (`_unthinkable`).

Raising: `text` → content, `thinking` → `reasoning_content`, `tool_use` → tool calls; named stream events
(`message_start`, `content_block_*` with text/input_json/thinking/signature deltas, `message_delta`,
`message_stop`, `error`) → chat chunks. Usage counts cache reads as cached prompt tokens and cache writes
as `prompt_tokens_details.cache_write_tokens`, both inside `prompt_tokens` as OpenAI counts them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from engine import carry, carry_store
from engine.errors import GatewayError
from engine.wires.base import (
    JSON,
    UNCARRIED_CHAT_FIELDS,
    Call,
    ChunkWriter,
    Lowered,
    StreamBroken,
    StreamItem,
    UpstreamError,
    Usage,
    chat_usage,
    error_from_doc,
    event_object,
    finish_of,
)
from engine.wires.sse import Event

_decode = msgspec.json.decode
_encode = msgspec.json.encode
CARRIER = "anthropic"

# Chat fields with no Messages counterpart that change what the answer means are refused rather than
# silently ignored; the body is built from the fields below, so anything else (sampling hints such as
# frequency_penalty or seed, OpenAI-only fields such as store) is dropped.
_REFUSED = {
    "n": "several choices",
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    **UNCARRIED_CHAT_FIELDS,
    "functions": "legacy functions (use `tools`)",
    "function_call": "legacy functions (use `tool_choice`)",
}
_PASSED = ("temperature", "top_p", "top_k", "thinking", "output_config")
# Anthropic's error types and the HTTP status each stands for (docs.claude.com/en/api/errors), for errors
# that arrive inside a 200 stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _asks_for(field: str, value: Any) -> bool:
    """Whether a refused field asks for something (n=1, top_logprobs=0, false and null ask for nothing)."""
    if value is None or value is False:
        return False
    harmless: Any = {"n": 1, "top_logprobs": 0}.get(field, object())
    return bool(value != harmless)


def _refuse(field: str, message: str) -> GatewayError:
    return GatewayError(400, message, param=field, code="unsupported_parameter")


# --------------------------------------------------------------------------------------------- lowering


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _image(url: Any, where: str) -> JSON:
    if not isinstance(url, str) or not url:
        raise _refuse(where, f"`{where}` needs an `image_url.url`: an https URL or a base64 data URL.")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0]
        if ";base64" not in header or not media_type.startswith("image/"):
            raise _refuse(where, f"`{where}` must be a base64 image data URL (data:image/png;base64,…).")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _document(file: Any, where: str) -> JSON:
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:application/pdf;base64,"):
        raise _refuse(where, f"`{where}` must carry `file.file_data` as a base64 PDF data URL.")
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data[28:]}}


def _user_blocks(content: Any, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JSON] = []
    for i, part in enumerate(content if isinstance(content, list) else ()):
        kind = part.get("type") if isinstance(part, dict) else None
        at = f"{where}[{i}]"
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image((part.get("image_url") or {}).get("url"), at))
        elif kind == "file":
            blocks.append(_document(part.get("file"), at))
        else:
            raise _refuse(at, f"`{at}` is a `{kind}` part, which Anthropic's Messages API cannot take.")
    return blocks


def _arguments(raw: Any, where: str) -> JSON:
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        parsed = _decode(raw) if isinstance(raw, str | bytes) else None
    except msgspec.DecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise _refuse(where, f"`{where}` must be a JSON object: Anthropic's tool_use input is an object.")
    return parsed


def tool_id(call_id: Any) -> str:
    """A tool-call id as Anthropic accepts it (`[A-Za-z0-9_-]+`): ids from other providers (`call_a1/+=`)
    are replaced by a digest, the same for the `tool_use` and for its `tool_result`."""
    text = str(call_id or "")
    if carry.ALPHABET.fullmatch(text) and text:
        return text
    return "toolu_" + base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()[:18]).decode("ascii")


def _thinking_blocks(state: bytes) -> list[JSON]:
    try:
        blocks = _decode(state)
    except msgspec.DecodeError:
        return []
    return [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []


def _assistant_blocks(message: JSON, where: str, call: Call) -> list[JSON]:
    blocks: list[JSON] = []
    tool_calls = message.get("tool_calls") or []
    for tool_call in tool_calls:  # the thinking that led to these calls goes first, whole and signed
        state = call.carried.get(str(tool_call.get("id"))) if isinstance(tool_call, dict) else None
        if state:
            blocks = _thinking_blocks(state)
            break
    text = _text_of(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for i, tool_call in enumerate(tool_calls):
        function = tool_call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_id(tool_call.get("id")),
                "name": function.get("name"),
                "input": _arguments(function.get("arguments"), f"{where}.tool_calls[{i}].function.arguments"),
            }
        )
    return blocks


def _tool_result(message: JSON) -> JSON:
    content = message.get("content")
    result: JSON = {"type": "tool_result", "tool_use_id": tool_id(message.get("tool_call_id"))}
    if isinstance(content, list):
        result["content"] = [{"type": "text", "text": p.get("text", "")} for p in content if isinstance(p, dict)]
    else:
        result["content"] = content if isinstance(content, str) else ""
    return result


def _turns(messages: list[Any], call: Call) -> tuple[list[JSON], list[JSON]]:
    """(system blocks, alternating turns). Consecutive messages of one role share a turn; a turn's tool
    results come before anything else in it, as Anthropic requires."""
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(messages):
        role, where = message.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system.append({"type": "text", "text": text})
            continue
        if role == "assistant":
            turn_role, blocks = "assistant", _assistant_blocks(message, where, call)
        elif role == "tool":
            turn_role, blocks = "user", [_tool_result(message)]
        else:
            turn_role, blocks = "user", _user_blocks(message.get("content"), f"{where}.content")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            merged = turns[-1]["content"] + blocks
            if turn_role == "user":  # tool results first
                merged.sort(key=lambda b: b.get("type") != "tool_result")
            turns[-1]["content"] = merged
        else:
            turns.append({"role": turn_role, "content": blocks})
    return system, turns


def _tool_choice(choice: Any, parallel: Any) -> JSON | None:
    out: JSON | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise _refuse("tool_choice", "`tool_choice` must be auto, required, none or a named function.")
    if parallel is False and (out is None or out["type"] != "none"):
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def _tools(tools: Any) -> list[JSON]:
    out = []
    for i, tool in enumerate(tools or ()):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict):
            raise _refuse(f"tools[{i}]", f"`tools[{i}]` is not a function tool; Anthropic takes function tools only.")
        entry: JSON = {"name": function.get("name"), "input_schema": function.get("parameters") or {"type": "object"}}
        if function.get("description"):
            entry["description"] = function["description"]
        out.append(entry)
    return out


_NOTHING_CARRIED = Call(public_model="", upstream_model="")  # thinking off: carried blocks are not sent


def _unthinkable(turns: list[JSON]) -> bool:
    """True when thinking must be off for this request: a tool loop is in progress (the last turn answers
    tool calls) but the assistant turn that made the calls lacks its thinking blocks, which Anthropic
    then refuses ("a final assistant message must start with a thinking block")."""
    if len(turns) < 2 or turns[-1]["role"] != "user" or turns[-2]["role"] != "assistant":
        return False
    asked = turns[-2]["content"]
    made_calls = any(b.get("type") == "tool_use" for b in asked)
    answered = any(b.get("type") == "tool_result" for b in turns[-1]["content"])
    starts_thinking = bool(asked) and asked[0].get("type") in ("thinking", "redacted_thinking")
    return made_calls and answered and not starts_thinking


class AnthropicMessagesWire:
    name = "anthropic_messages"
    shape = "messages"
    accepts = "chat"
    carrier = CARRIER

    def lower(self, body: JSON, call: Call) -> Lowered:
        for field_name, what in _REFUSED.items():
            if _asks_for(field_name, body.get(field_name)):
                raise _refuse(
                    field_name,
                    f"`{field_name}` ({what}) cannot be honoured: this model is served over Anthropic's Messages API,"
                    " which has no equivalent. Remove the field and retry.",
                )
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
            raise _refuse(
                "response_format",
                "`response_format` (JSON mode) cannot be honoured over Anthropic's Messages API; describe the JSON"
                " in the prompt, or use a tool whose parameters are the schema.",
            )
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise _refuse("max_tokens", "Anthropic needs `max_tokens` (a positive integer) on every request.")
        thinking = body.get("thinking")
        thinks = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
        system, turns = _turns(body.get("messages") or [], call if thinks else _NOTHING_CARRIED)
        if thinks and _unthinkable(turns):
            thinks = False
        out: JSON = {"model": call.upstream_model, "max_tokens": max_tokens, "messages": turns}
        if system:
            out["system"] = system
        for name in _PASSED:
            if body.get(name) is not None and name not in ("thinking", "output_config"):
                out[name] = body[name]
        if thinks:
            assert isinstance(thinking, dict)
            out["thinking"] = thinking
            if body.get("output_config") is not None:
                out["output_config"] = body["output_config"]
            budget = thinking.get("budget_tokens")
            if isinstance(budget, int) and budget >= max_tokens:
                out["max_tokens"] = budget + max_tokens  # the client's limit is for the answer, not the thinking
        stop = body.get("stop")
        if stop:
            out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if body.get("tools"):
            out["tools"] = _tools(body["tools"])
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None and (body.get("tools") or choice["type"] == "none"):
            out["tool_choice"] = choice
        if isinstance(body.get("user"), str):
            out["metadata"] = {"user_id": body["user"]}
        if call.stream:
            out["stream"] = True
        return Lowered("/messages", out)

    # ------------------------------------------------------------------------------------------ raising

    def raise_json(self, doc: JSON, call: Call) -> JSON | UpstreamError:
        if doc.get("type") == "error":
            return _error(doc)
        call.usage = usage_of(doc.get("usage"))
        text, reasoning, thinking_blocks, calls = [], [], [], []
        for block in doc.get("content") or ():
            kind = block.get("type")
            if kind == "text":
                text.append(block.get("text", ""))
            elif kind in ("thinking", "redacted_thinking"):
                thinking_blocks.append(block)
                if block.get("thinking"):
                    reasoning.append(block["thinking"])
            elif kind == "tool_use":
                calls.append(block)
        state = _encode(thinking_blocks) if thinking_blocks else b""
        message: JSON = {"role": "assistant", "content": "".join(text) or None, "refusal": None}
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        if calls:
            message["tool_calls"] = [
                {
                    "id": _client_id(block.get("id"), state),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": _encode(block.get("input") or {}).decode()},
                }
                for block in calls
            ]
        finish = finish_of(doc.get("stop_reason"), call, bool(calls), "Anthropic")
        if isinstance(finish, UpstreamError):
            return finish
        usage = call.usage or Usage()
        return {
            "id": doc.get("id"),
            "object": "chat.completion",
            "created": call.created,
            "model": doc.get("model") or call.upstream_model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": chat_usage(usage),
        }

    async def raise_stream(self, events: AsyncIterator[Event], call: Call) -> AsyncIterator[StreamItem | UpstreamError]:
        state = _StreamState(call)
        async for event in events:
            data = event_object(event.data)
            kind = event.event or data.get("type")
            if kind == "error":
                yield _error(data)
                return
            for chunk in state.on(kind, data):
                yield chunk
            if kind == "message_stop":
                return
        raise StreamBroken("upstream stream ended before message_stop")

    def error_of(self, body: bytes) -> UpstreamError:
        try:
            doc = _decode(body)
        except msgspec.DecodeError:
            return UpstreamError(message="")
        return _error(doc) if isinstance(doc, dict) and doc.get("type") == "error" else error_from_doc(doc)


def _error(doc: JSON) -> UpstreamError:
    found = doc.get("error")
    error: JSON = found if isinstance(found, dict) else {}
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    return UpstreamError(
        message=str(error.get("message") or ""),
        type=kind,
        status=ERROR_STATUS.get(kind or ""),
    )


def _client_id(upstream_id: Any, state: bytes) -> str:
    """The tool-call id the client sees: Anthropic's, with the turn's thinking blocks packed in."""
    call_id = str(upstream_id or "")
    if not state or not carry.ALPHABET.fullmatch(call_id):
        return call_id
    # Thinking blocks are kilobytes: stored (engine.carry_store) when the request has a store, which every
    # request through the gateway has; inline (in the id itself) otherwise, e.g. in the snapshot tests.
    backend = carry_store.LETTER if carry_store.in_scope() else "i"
    return carry.pack(call_id, CARRIER, state, backend=backend)


def usage_of(usage: Any) -> Usage | None:
    """Anthropic's usage → OpenAI's terms: `input_tokens` excludes the cache, so prompt tokens add both."""
    if not isinstance(usage, dict):
        return None
    read = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + read + written
    completion = _int(usage.get("output_tokens"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=read,
        cache_write_tokens=written,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class _StreamState(ChunkWriter):
    """Turns Messages stream events into chat chunks. Nothing is sent before the first content, so an
    `error` event right after `message_start` still becomes a real HTTP error (the proxy waits for it)."""

    def __init__(self, call: Call) -> None:
        super().__init__("msg", call.created, call.upstream_model)
        self.call = call
        self.counts: JSON = {}  # Anthropic's usage so far: message_start's, updated by message_delta
        self.blocks: dict[int, JSON] = {}  # content index → the block being built
        self.thinking: list[JSON] = []  # finished thinking blocks of this message
        self.tool_index: dict[int, int] = {}  # content index → chat tool-call index
        self.stop_reason: str | None = None

    def on(self, kind: str | None, data: JSON) -> Sequence[JSON | UpstreamError]:
        if kind == "message_start":
            message = data.get("message") or {}
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self.counts.update(message.get("usage") or {})
            return []
        if kind == "content_block_start":
            return self._start(_int(data.get("index")), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(_int(data.get("index")), data.get("delta") or {})
        if kind == "content_block_stop":
            index = _int(data.get("index"))
            block = self.blocks.pop(index, None)
            if block is not None and block.get("type") in ("thinking", "redacted_thinking"):
                self.thinking.append(block)
            if block is not None and block.get("type") == "tool_use" and not block.get("sent"):
                # no input_json_delta at all: the input is `{}`, and a client must still get valid JSON
                empty = {"index": self.tool_index[index], "function": {"arguments": "{}"}}
                return [self.chunk({"tool_calls": [empty]})]
            return []
        if kind == "message_delta":
            self.stop_reason = (data.get("delta") or {}).get("stop_reason") or self.stop_reason
            self.counts.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            return []
        if kind == "message_stop":
            return self._finish()
        return []  # ping, and event types added after this codec was written

    def _start(self, index: int, block: JSON) -> list[JSON]:
        kind = block.get("type")
        if kind in ("thinking", "redacted_thinking"):
            self.blocks[index] = dict(block)
            return [self.chunk({"reasoning_content": block["thinking"]})] if block.get("thinking") else []
        if kind == "tool_use":
            position = len(self.tool_index)
            self.tool_index[index] = position
            self.blocks[index] = {"type": "tool_use"}
            state = _encode(self.thinking) if self.thinking else b""
            call = {
                "index": position,
                "id": _client_id(block.get("id"), state),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self.chunk({"tool_calls": [call]})]
        self.blocks[index] = {"type": kind}
        return [self.chunk({"content": block["text"]})] if kind == "text" and block.get("text") else []

    def _delta(self, index: int, delta: JSON) -> list[JSON]:
        kind = delta.get("type")
        block = self.blocks.get(index)
        if kind == "text_delta":
            return [self.chunk({"content": delta.get("text", "")})]
        if kind == "thinking_delta":
            if block is not None:
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            return [self.chunk({"reasoning_content": delta.get("thinking", "")})]
        if kind == "signature_delta":
            if block is not None:
                block["signature"] = block.get("signature", "") + delta.get("signature", "")
            return []
        if kind == "input_json_delta" and index in self.tool_index:
            fragment = delta.get("partial_json", "")
            if not fragment:
                return []
            if block is not None:
                block["sent"] = True
            return [
                self.chunk({"tool_calls": [{"index": self.tool_index[index], "function": {"arguments": fragment}}]})
            ]
        return []

    def _finish(self) -> list[JSON | UpstreamError]:
        self.call.usage = usage_of(self.counts)
        finish = finish_of(self.stop_reason, self.call, bool(self.tool_index), "Anthropic")
        if isinstance(finish, UpstreamError):
            return [finish]
        chunks: list[JSON | UpstreamError] = [self.chunk({}, finish)]
        if self.call.include_usage and self.call.usage is not None:
            chunks.append(self.usage_chunk(self.call.usage))
        return chunks
