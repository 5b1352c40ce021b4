"""The Responses client shape (`POST /responses`), for every model in the catalog.

To a provider that speaks Responses the request passes through (`NativeRenderer` only frames the
upstream's own events). To a chat-only provider, `responses_request.to_chat` lowers the Responses request
to the canonical Chat Completions shape, and `FromChatRenderer` raises the chat answer back: output items,
`output_text`, usage, and the named SSE events Responses clients consume.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec

from engine.errors import GatewayError
from engine.shapes.base import Sanitize
from engine.wires.base import JSON, Call, StreamItem, UpstreamError, Usage
from engine.wires.sse import frame

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def responses_usage(usage: Usage | None) -> JSON | None:
    if usage is None:
        return None
    input_details = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        input_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": input_details,
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _suffix(chat_id: Any) -> str:
    text = str(chat_id or "gw")
    return text.removeprefix("chatcmpl-").removeprefix("chatcmpl_")


class _ResponseBuilder:
    """Accumulates output items and renders the Response object, for JSON and for stream events alike."""

    def __init__(self, request: JSON, public_model: str) -> None:
        self.request = request
        self.public_model = public_model
        self.id = "resp_gw"
        self.created = int(time.time())
        self.output: list[JSON] = []
        self.status = "in_progress"
        self.incomplete: JSON | None = None
        self.usage: Usage | None = None

    def adopt(self, chat_id: Any, created: Any) -> None:
        self.id = f"resp_{_suffix(chat_id)}"
        if isinstance(created, int):
            self.created = created

    def finish(self, reason: str | None) -> None:
        if reason == "length":
            self.status, self.incomplete = "incomplete", {"reason": "max_output_tokens"}
        elif reason == "content_filter":
            self.status, self.incomplete = "incomplete", {"reason": "content_filter"}
        else:
            self.status = "completed"

    def document(self) -> JSON:
        request = self.request
        text = "".join(
            part.get("text", "")
            for item in self.output
            if item.get("type") == "message"
            for part in item.get("content", ())
            if part.get("type") == "output_text"
        )
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": self.status,
            "error": None,
            "incomplete_details": self.incomplete,
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "model": self.public_model,
            "output": self.output,
            "output_text": text,
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
            "store": False,
            "temperature": request.get("temperature"),
            "text": request.get("text") or {"format": {"type": "text"}},
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools") or [],
            "top_p": request.get("top_p"),
            "usage": responses_usage(self.usage),
            "metadata": request.get("metadata") or {},
        }


def _message_item(item_id: str, text: str, status: str = "completed") -> JSON:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text else [],
    }


def _reasoning_item(item_id: str, text: str) -> JSON:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}] if text else []}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> JSON:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


class FromChatRenderer:
    """Chat answers raised by a chat-speaking wire → the Responses shape."""

    def __init__(self, request: JSON, public_model: str) -> None:
        self.request = request
        self.public_model = public_model
        self.sequence = 0  # the next event's sequence number, for a closing error event

    def json(self, doc: JSON, call: Call) -> JSON:
        builder = _ResponseBuilder(self.request, self.public_model)
        builder.adopt(doc.get("id"), doc.get("created"))
        choice = (doc.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        suffix = _suffix(doc.get("id"))
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            builder.output.append(_reasoning_item(f"rs_{suffix}", reasoning))
        text = message.get("content")
        if isinstance(text, list):
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        if text:
            builder.output.append(_message_item(f"msg_{suffix}", text))
        for i, tool_call in enumerate(message.get("tool_calls") or ()):
            function = tool_call.get("function") or {}
            builder.output.append(
                _call_item(
                    f"fc_{suffix}_{i}",
                    str(tool_call.get("id") or ""),
                    str(function.get("name") or ""),
                    function.get("arguments", ""),
                )
            )
        builder.finish(choice.get("finish_reason"))
        builder.usage = call.usage
        return builder.document()

    async def frames(
        self, items: AsyncIterator[StreamItem | UpstreamError], call: Call, sanitize: Sanitize
    ) -> AsyncIterator[bytes]:
        events = _EventWriter(_ResponseBuilder(self.request, self.public_model))
        try:
            async for item in items:
                if isinstance(item, UpstreamError):
                    yield events.error(sanitize(None, item))
                    return
                chunk = _decode(item) if isinstance(item, bytes) else item
                for out in events.on_chunk(chunk):
                    yield out
            for out in events.complete(call.usage):
                yield out
        finally:
            self.sequence = events.sequence

    def broken(self, error: GatewayError) -> bytes:
        return _error_frame(error, self.sequence)


def _error_frame(error: GatewayError, sequence: int) -> bytes:
    data = {
        "type": "error",
        "sequence_number": sequence,
        "code": error.code or error.type,
        "message": error.message,
        "param": error.param,
    }
    return frame(_encode(data), "error")


@dataclass(frozen=True)
class _TextItem:
    """How one kind of streamed text item (a message, a reasoning summary) is named on the Responses wire."""

    id_prefix: str
    parts: str  # the item's list of parts
    part_index: str  # the field that indexes into it
    part: JSON  # an empty part
    part_added: str
    text_delta: str
    text_done: str
    part_done: str
    extra: JSON  # fields the message events carry and the reasoning ones do not

    def new(self, item_id: str) -> JSON:
        item = _message_item(item_id, "", "in_progress") if self.parts == "content" else _reasoning_item(item_id, "")
        item[self.parts] = [{**self.part, "text": "", **self.extra}]
        return item


_TEXT_ITEMS = {
    "message": _TextItem(
        "msg",
        "content",
        "content_index",
        {"type": "output_text", "text": "", "annotations": []},
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        {"logprobs": []},
    ),
    "reasoning": _TextItem(
        "rs",
        "summary",
        "summary_index",
        {"type": "summary_text", "text": ""},
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        {},
    ),
}


class _EventWriter:
    """Chat chunks → Responses stream events, with sequence numbers and the item lifecycle
    (`output_item.added` … deltas … `.done`) that Responses clients track."""

    def __init__(self, builder: _ResponseBuilder) -> None:
        self.builder = builder
        self.sequence = 0
        self.started = False
        self.open: JSON | None = None  # the message or reasoning item receiving deltas
        self.calls: dict[int, JSON] = {}  # chat tool-call index → function_call item
        self.finish: str | None = None

    def emit(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return frame(_encode(data), kind)

    def error(self, error: GatewayError) -> bytes:
        out = _error_frame(error, self.sequence)
        self.sequence += 1
        return out

    def _start(self, chunk: JSON) -> list[bytes]:
        self.started = True
        self.builder.adopt(chunk.get("id"), chunk.get("created"))
        snapshot = self.builder.document()
        return [self.emit("response.created", response=snapshot), self.emit("response.in_progress", response=snapshot)]

    def _index(self) -> int:
        return len(self.builder.output)

    def _item_id(self, prefix: str) -> str:
        return f"{prefix}_{self.builder.id.removeprefix('resp_')}_{self._index()}"

    def _close_open(self) -> list[bytes]:
        item, self.open = self.open, None
        if item is None:
            return []
        kind = _TEXT_ITEMS[item["type"]]
        index = self.builder.output.index(item)
        text = item[kind.parts][0]["text"]
        if "status" in item:
            item["status"] = "completed"
        where = {"item_id": item["id"], "output_index": index, kind.part_index: 0}
        return [
            self.emit(kind.text_done, **where, text=text, **kind.extra),
            self.emit(kind.part_done, **where, part={**kind.part, "text": text, **kind.extra}),
            self.emit("response.output_item.done", output_index=index, item=item),
        ]

    def _delta(self, item_type: str, delta: str) -> list[bytes]:
        """Append text to the open message or reasoning item, opening one (and closing any other) first."""
        kind = _TEXT_ITEMS[item_type]
        out: list[bytes] = []
        if self.open is None or self.open["type"] != item_type:
            out += self._close_open()
            item = kind.new(self._item_id(kind.id_prefix))
            self.builder.output.append(item)
            self.open = item
            index = self._index() - 1
            out.append(self.emit("response.output_item.added", output_index=index, item={**item, kind.parts: []}))
            where = {"item_id": item["id"], "output_index": index, kind.part_index: 0}
            out.append(self.emit(kind.part_added, **where, part=dict(kind.part)))
        item = self.open
        item[kind.parts][0]["text"] += delta
        where = {"item_id": item["id"], "output_index": self.builder.output.index(item), kind.part_index: 0}
        out.append(self.emit(kind.text_delta, **where, delta=delta, **kind.extra))
        return out

    def _tool_call(self, fragment: JSON) -> list[bytes]:
        out: list[bytes] = []
        index = fragment.get("index", 0)
        function = fragment.get("function") or {}
        item = self.calls.get(index)
        if item is None:
            out += self._close_open()
            item = _call_item(
                self._item_id("fc"), fragment.get("id") or "", function.get("name") or "", "", "in_progress"
            )
            self.calls[index] = item
            self.builder.output.append(item)
            out.append(self.emit("response.output_item.added", output_index=self._index() - 1, item=dict(item)))
        arguments = function.get("arguments") or ""
        if arguments:
            item["arguments"] += arguments
            out.append(
                self.emit(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self.builder.output.index(item),
                    delta=arguments,
                )
            )
        return out

    def on_chunk(self, chunk: JSON) -> list[bytes]:
        out = [] if self.started else self._start(chunk)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out += self._delta("reasoning", reasoning)
            if isinstance(delta.get("content"), str) and delta["content"]:
                out += self._delta("message", delta["content"])
            for fragment in delta.get("tool_calls") or ():
                out += self._tool_call(fragment)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def complete(self, usage: Usage | None) -> list[bytes]:
        out = [] if self.started else self._start({})
        out += self._close_open()
        for item in self.calls.values():
            index = self.builder.output.index(item)
            item["status"] = "completed"
            out.append(
                self.emit(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
            out.append(self.emit("response.output_item.done", output_index=index, item=item))
        self.builder.finish(self.finish)
        self.builder.usage = usage
        kind = "response.incomplete" if self.builder.status == "incomplete" else "response.completed"
        out.append(self.emit(kind, response=self.builder.document()))
        return out


class MalformedEvent(ValueError):
    """An upstream Responses event the client could not consume (a bad type or sequence number)."""


class NativeRenderer:
    """A provider that speaks Responses: its events cross unchanged (but for stripped fields), as long as
    each names its type and numbers itself after the one before; the first that does not ends the stream
    (the proxy sends one closing error event, numbered after the last good one)."""

    def __init__(self) -> None:
        self.sequence = 0  # the next event's sequence number

    def json(self, doc: JSON, call: Call) -> JSON:
        return doc

    async def frames(
        self, items: AsyncIterator[StreamItem | UpstreamError], call: Call, sanitize: Sanitize
    ) -> AsyncIterator[bytes]:
        async for item in items:
            if isinstance(item, UpstreamError):
                yield _error_frame(sanitize(None, item), self.sequence)
                self.sequence += 1
                return
            data = _decode(item) if isinstance(item, bytes) else item
            number, kind = data.get("sequence_number", self.sequence), data.get("type")
            if not isinstance(kind, str) or type(number) is not int or number < self.sequence:
                raise MalformedEvent(f"event {kind!r} has sequence_number {number!r} after {self.sequence - 1}")
            self.sequence = number + 1
            yield frame(item if isinstance(item, bytes) else _encode(item), kind)

    def broken(self, error: GatewayError) -> bytes:
        return _error_frame(error, self.sequence)
