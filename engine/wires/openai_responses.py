"""The OpenAI Responses wire (`POST {base}/responses`).

Two uses. As a bridge, it carries Chat Completions requests (the canonical shape): `lower` turns a chat
request into a stateless Responses request and `raise_json` / `raise_stream` turn the answer back into
a `chat.completion` or `chat.completion.chunk`s. OpenAI needs this for gpt-5.x with function tools and
reasoning, which /chat/completions refuses. As a native wire (`native`), it passes Responses requests
from `/responses` clients through untouched, only reading usage for metering.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

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
    openai_error_of,
)
from engine.wires.sse import Event

_decode = msgspec.json.decode

# Chat fields with no Responses counterpart. Sampling hints are dropped (reasoning models ignore or
# refuse them anyway); fields that change what the answer means are refused rather than ignored.
_DROPPED = frozenset(
    {
        "stream_options",
        "logit_bias",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "n",
        "logprobs",
        "function_call",
        "functions",
    }
)
_REFUSED = {"stop": "stop sequences", **UNCARRIED_CHAT_FIELDS}
# Chat fields renamed or reshaped by `lower`; everything else passes through as the client sent it.
_RESHAPED = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "response_format",
        "max_tokens",
        "max_completion_tokens",
        "reasoning_effort",
        "verbosity",
        "top_logprobs",
    }
)
MIN_OUTPUT_TOKENS = 16  # the Responses API refuses smaller limits


def _refuse(field: str, what: str) -> GatewayError:
    return GatewayError(
        400,
        f"`{field}` ({what}) cannot be honoured for this model: the gateway serves it over the Responses "
        "API, which has no equivalent. Remove the field and retry.",
        param=field,
        code="unsupported_parameter",
    )


def text_of(content: Any) -> str:
    """The text of a chat message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _input_part(part: dict[str, Any], index: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "input_text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url") or {}
        return {"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail") or "auto"}
    if kind == "file":
        file = part.get("file") or {}
        return {"type": "input_file", **{k: v for k, v in file.items() if k in ("file_id", "file_data", "filename")}}
    raise GatewayError(
        400,
        f"Content parts of type `{kind}` cannot be sent to this model over the Responses API.",
        param=index,
        code="unsupported_parameter",
    )


def _user_content(content: Any, param: str) -> Any:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    return [_input_part(p, f"{param}[{i}]") for i, p in enumerate(content or [])]


def lower_messages(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """Chat messages → (instructions, input items). Leading system/developer messages become
    `instructions`; later ones stay in place as developer messages."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            if not items:
                instructions.append(text_of(content))
            else:
                items.append({"role": "developer", "content": text_of(content)})
        elif role == "user":
            items.append({"role": "user", "content": _user_content(content, f"messages[{i}].content")})
        elif role == "assistant":
            text = text_of(content)
            if text:
                items.append(
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                )
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                # Only call_id, name and arguments: an `fc_` item id without its reasoning item is refused.
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments") or "",
                    }
                )
        elif role == "tool":
            items.append(
                {"type": "function_call_output", "call_id": message.get("tool_call_id"), "output": text_of(content)}
            )
        else:
            raise GatewayError(
                400,
                f"Messages with role `{role}` cannot be sent over the Responses API.",
                param=f"messages[{i}].role",
                code="unsupported_parameter",
            )
    return ("\n\n".join(instructions) if instructions else None), items


def lower_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "custom":
        return {"type": "custom", **(tool.get("custom") or {})}
    function = tool.get("function") or {}
    flat: dict[str, Any] = {"type": "function", "name": function.get("name")}
    if function.get("description"):
        flat["description"] = function["description"]
    flat["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
    # Responses makes tools strict unless told otherwise; Chat does the opposite. Keep Chat's meaning.
    flat["strict"] = bool(function.get("strict"))
    return flat


def lower_tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "name": (choice.get("function") or {}).get("name")}
    if choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        tools = [
            {"type": "function", "name": (t.get("function") or {}).get("name")} if t.get("type") == "function" else t
            for t in allowed.get("tools") or ()
        ]
        return {"type": "allowed_tools", "mode": allowed.get("mode", "auto"), "tools": tools}
    return choice


def lower_format(response_format: dict[str, Any]) -> dict[str, Any]:
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema") or {}
        return {"type": "json_schema", **{k: v for k, v in schema.items() if v is not None}}
    return {"type": response_format.get("type", "text")}


def usage_from_responses(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("input_tokens") or 0
    completion = usage.get("output_tokens") or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=usage.get("total_tokens") or prompt + completion,
        cached_tokens=(usage.get("input_tokens_details") or {}).get("cached_tokens") or 0,
        reasoning_tokens=(usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def finish_reason(response: dict[str, Any], made_calls: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if made_calls else "stop"


def _error_of_response(response: dict[str, Any]) -> UpstreamError:
    error = response.get("error") or {}
    return UpstreamError(
        message=str(error.get("message") or "The upstream response failed."),
        type=error.get("type") or "api_error",
        code=error.get("code"),
        param=error.get("param"),
    )


async def _events_until_failure(events: AsyncIterator[Event]) -> AsyncIterator[tuple[str | None, JSON | UpstreamError]]:
    """Decoded Responses events as (type, data); an `error` or `response.failed` event ends the stream as
    its normalized UpstreamError."""
    async for event in events:
        try:
            data = _decode(event.data)
        except msgspec.DecodeError:
            raise StreamBroken("upstream sent an event that is not JSON") from None
        if not isinstance(data, dict):
            continue
        kind = data.get("type") or event.event
        if kind == "error":
            yield kind, error_from_doc(data)
            return
        if kind == "response.failed":
            yield kind, _error_of_response(data.get("response") or {})
            return
        yield kind, data


class OpenAIResponsesWire:
    name = "openai_responses"
    shape = "responses"
    accepts = "chat"

    def __init__(self) -> None:
        self.native = ResponsesPassthrough()

    # ------------------------------------------------------------------ chat → responses

    def lower(self, body: JSON, call: Call) -> Lowered:
        for field, what in _REFUSED.items():
            if field in body:
                raise _refuse(field, what)
        instructions, items = lower_messages(body.get("messages") or [])
        out: JSON = {"model": call.upstream_model}
        if instructions is not None:
            out["instructions"] = instructions
        out["input"] = items
        if body.get("tools"):
            out["tools"] = [lower_tool(t) for t in body["tools"]]
        if "tool_choice" in body:
            out["tool_choice"] = lower_tool_choice(body["tool_choice"])
        text: JSON = {}
        if isinstance(body.get("response_format"), dict):
            text["format"] = lower_format(body["response_format"])
        if body.get("verbosity"):
            text["verbosity"] = body["verbosity"]
        if text:
            out["text"] = text
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int):
            out["max_output_tokens"] = max(limit, MIN_OUTPUT_TOKENS)
        if body.get("reasoning_effort"):
            out["reasoning"] = {"effort": body["reasoning_effort"]}
        if body.get("top_logprobs"):
            out["top_logprobs"] = body["top_logprobs"]
        for field, value in body.items():
            if field not in _RESHAPED and field not in _DROPPED and field not in out:
                out[field] = value
        # Stateless by default: nothing is kept upstream, reasoning travels encrypted instead.
        out.setdefault("store", False)
        out.setdefault("include", ["reasoning.encrypted_content"])
        return Lowered("/responses", out)

    # ------------------------------------------------------------------ responses → chat

    def raise_json(self, doc: JSON, call: Call) -> JSON | UpstreamError:
        if doc.get("status") == "failed":  # a 200 carrying a failed response: its error is the answer
            call.usage = usage_from_responses(doc.get("usage"))
            return _error_of_response(doc)
        content: list[str] = []
        refusal: list[str] = []
        reasoning: list[str] = []
        tool_calls: list[JSON] = []
        for item in doc.get("output") or ():
            kind = item.get("type")
            if kind == "message":
                for part in item.get("content") or ():
                    if part.get("type") == "output_text":
                        content.append(part.get("text", ""))
                    elif part.get("type") == "refusal":
                        refusal.append(part.get("refusal", ""))
            elif kind == "function_call":
                tool_calls.append(
                    {
                        "id": item.get("call_id"),
                        "type": "function",
                        "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
                    }
                )
            elif kind == "reasoning":
                reasoning += [s.get("text", "") for s in item.get("summary") or () if isinstance(s, dict)]
        message: JSON = {
            "role": "assistant",
            "content": "".join(content) if content or not tool_calls else None,
            "refusal": "".join(refusal) if refusal else None,
        }
        if reasoning:
            message["reasoning_content"] = "\n\n".join(reasoning)
        if tool_calls:
            message["tool_calls"] = tool_calls
        call.usage = usage_from_responses(doc.get("usage"))
        answer: JSON = {
            "id": doc.get("id"),
            "object": "chat.completion",
            "created": doc.get("created_at"),
            "model": doc.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(doc, bool(tool_calls)),
                }
            ],
        }
        if call.usage is not None:
            answer["usage"] = chat_usage(call.usage)
        return answer

    async def raise_stream(self, events: AsyncIterator[Event], call: Call) -> AsyncIterator[StreamItem | UpstreamError]:
        state = _ChunkState(call)
        async for kind, data in _events_until_failure(events):
            if isinstance(data, UpstreamError):
                yield data
                return
            for chunk in state.on(kind, data):
                yield chunk
            if state.done:
                return
        raise StreamBroken("upstream stream ended before response.completed")

    def error_of(self, body: bytes) -> UpstreamError:
        return openai_error_of(body)


class _ChunkState(ChunkWriter):
    """Turns Responses stream events into chat chunks. Tool calls are indexed in order of appearance and
    keyed by item id, because argument deltas name the item, not the call."""

    def __init__(self, call: Call) -> None:
        super().__init__("resp", 0, call.upstream_model)
        self.call = call
        self.tool_index: dict[str, int] = {}  # item id → chat tool-call index
        self.arguments: dict[int, str] = {}  # index → arguments sent so far
        self.done = False

    def on(self, kind: str | None, data: JSON) -> list[JSON]:
        if kind == "response.created":
            response = data.get("response") or {}
            self.id = response.get("id") or self.id
            self.model = response.get("model") or self.model
            self.created = response.get("created_at") or 0
            return []
        if kind == "response.output_text.delta":
            return [self.chunk({"content": data.get("delta", "")})]
        if kind == "response.refusal.delta":
            return [self.chunk({"refusal": data.get("delta", "")})]
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return [self.chunk({"reasoning_content": data.get("delta", "")})]
        if kind == "response.output_item.added":
            item = data.get("item") or {}
            if item.get("type") != "function_call":
                return []
            index = len(self.tool_index)
            self.tool_index[item.get("id") or f"output-{data.get('output_index')}"] = index
            self.arguments[index] = item.get("arguments") or ""
            return [
                self.chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": item.get("call_id"),
                                "type": "function",
                                "function": {"name": item.get("name"), "arguments": self.arguments[index]},
                            }
                        ]
                    }
                )
            ]
        if kind == "response.function_call_arguments.delta":
            found = self._index(data)
            if found is None:
                return []
            index = found
            self.arguments[index] += data.get("delta", "")
            return [self.chunk({"tool_calls": [{"index": index, "function": {"arguments": data.get("delta", "")}}]})]
        if kind in ("response.function_call_arguments.done", "response.output_item.done"):
            return self._catch_up(kind, data)
        if kind in ("response.completed", "response.incomplete"):
            return self._finish(data.get("response") or {})
        return []

    def _index(self, data: JSON) -> int | None:
        key = data.get("item_id") or f"output-{data.get('output_index')}"
        return self.tool_index.get(key)

    def _catch_up(self, kind: str, data: JSON) -> list[JSON]:
        """Send whatever part of a call's arguments arrived only in its `.done` event."""
        item = data.get("item") if kind == "response.output_item.done" else data
        if not isinstance(item, dict) or (kind == "response.output_item.done" and item.get("type") != "function_call"):
            return []
        index = self.tool_index.get(item.get("id") or item.get("item_id") or "")
        final = item.get("arguments")
        if index is None or not isinstance(final, str) or final == self.arguments[index]:
            return []
        sent = self.arguments[index]
        rest = final[len(sent) :] if final.startswith(sent) else final
        self.arguments[index] = final
        return [self.chunk({"tool_calls": [{"index": index, "function": {"arguments": rest}}]})]

    def _finish(self, response: JSON) -> list[JSON]:
        self.done = True
        chunks = [self.chunk({}, finish_reason(response, bool(self.tool_index)))]
        self.call.usage = usage_from_responses(response.get("usage"))
        if self.call.include_usage and self.call.usage is not None:
            chunks.append(self.usage_chunk(self.call.usage))
        return chunks


class ResponsesPassthrough:
    """`/responses` clients to a provider that speaks Responses: the request and answer cross unchanged;
    the gateway only names the upstream model and reads usage."""

    name = "openai_responses"
    shape = "responses"
    accepts = "responses"

    def lower(self, body: JSON, call: Call) -> Lowered:
        body["model"] = call.upstream_model
        return Lowered("/responses", body)

    def raise_json(self, doc: JSON, call: Call) -> JSON:
        call.usage = usage_from_responses(doc.get("usage"))
        return doc

    async def raise_stream(self, events: AsyncIterator[Event], call: Call) -> AsyncIterator[StreamItem | UpstreamError]:
        async for kind, data in _events_until_failure(events):
            yield data
            if isinstance(data, UpstreamError):
                return
            if kind in ("response.completed", "response.incomplete"):
                call.usage = usage_from_responses((data.get("response") or {}).get("usage"))
                return
        raise StreamBroken("upstream stream ended before response.completed")

    def error_of(self, body: bytes) -> UpstreamError:
        return openai_error_of(body)
