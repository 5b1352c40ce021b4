"""A local upstream that speaks OpenAI's Chat Completions and Responses wires, for tests and benchmarks.

It also serves Anthropic's Messages wire at `/v1/messages` (tests/fakes/anthropic_fake.py). It answers
like OpenAI does (chat: JSON or SSE with `[DONE]`, the usage chunk only when asked, tool
calls split over several chunks with `id` and `name` in the first; responses: output items and named
events ending in `response.completed`) and records every request it receives. It also refuses what
OpenAI refuses where the gateway must route around it: function tools with reasoning on gpt-5.x chat,
`fc_` item ids replayed without their reasoning item, and tool outputs with no matching call.
Tests steer it through a control API under `/_fake/`:

- `POST /_fake/script` queues the next answer(s): `{"status", "json", "sse": [event data...],
  "headers", "delay", "drop"}` (`drop` closes the connection without answering; `sse` items that are
  objects are JSON-encoded, strings are sent as they are). Failures on command, for resilience tests:
  `"hang": S` holds the request S seconds without answering, watching for the gateway to hang up;
  `"reset": true` resets the connection (TCP RST) after reading the request; `"trickle": S` sends the
  `json` answer one byte every S seconds; `"die_after": N` (with `sse`) cuts the connection after N
  events, with no clean end; `"event_delay"` spaces `sse` events.
- `GET /_fake/requests` lists what was received (method, path, headers, body); `DELETE` clears it.
- `GET /_fake/stats` counts streams the gateway closed before their end (`aborted`), and lists the
  seconds after which the gateway hung up on each `hang`ed request (`hung_up`, with `hung_up_at` as
  wall-clock times).

The media endpoints (embeddings, images, speech, transcriptions, video jobs) are in `openai_media_fake.py`.

Run it alone with `python -m tests.fakes.openai_fake --port 9100`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import struct
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from tests.fakes import anthropic_fake
from tests.fakes.openai_media_fake import MediaFake

CREATED = 1760000000
FIXED_REPLY = "Hello from the fake upstream."


def _usage(prompt: int = 12, completion: int = 7, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _wants_tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The first function tool, when the model should call it: tools offered, last turn is the user's."""
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    if not tools or body.get("tool_choice") == "none" or not messages or messages[-1].get("role") != "user":
        return None
    return tools[0].get("function")


def _reply_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    if messages and messages[-1].get("role") == "tool":
        return f"The tool said: {messages[-1].get('content')}"
    return FIXED_REPLY


def completion(body: dict[str, Any]) -> dict[str, Any]:
    tool = _wants_tool_call(body)
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if tool:
        message["tool_calls"] = [
            {
                "id": "call_fake_1",
                "type": "function",
                "function": {"name": tool["name"], "arguments": '{"city":"Oslo"}'},
            }
        ]
    else:
        message["content"] = _reply_text(body)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": CREATED,
        "model": body.get("model"),
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tool else "stop"}
        ],
        "usage": _usage(),
    }


def stream_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    model = body.get("model")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
        }

    tool = _wants_tool_call(body)
    if tool:
        chunks = [
            chunk(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_fake_1",
                            "type": "function",
                            "function": {"name": tool["name"], "arguments": ""},
                        }
                    ],
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
            chunk({}, "tool_calls"),
        ]
    else:
        words = _reply_text(body).split(" ")
        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
        chunks.append(chunk({}, "stop"))
    options = body.get("stream_options") or {}
    if options.get("include_usage"):
        chunks.append(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [],
                "usage": _usage(),
            }
        )
    return chunks


def chat_refusal(body: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's 400 for function tools with reasoning on /chat/completions (gpt-5.x; 5.5+ reason by default)."""
    model = str(body.get("model", ""))
    effort = body.get("reasoning_effort")
    reasons = effort not in (None, "none") or (effort is None and model.startswith(("gpt-5.5", "gpt-5.6")))
    if model.startswith("gpt-5") and body.get("tools") and reasons:
        return {
            "error": {
                "message": f"Function tools with reasoning_effort are not supported for {model} in "
                "/v1/chat/completions. Please use /v1/responses instead.",
                "type": "invalid_request_error",
                "param": "reasoning_effort",
                "code": None,
            }
        }
    return None


def responses_refusal(body: dict[str, Any]) -> dict[str, Any] | None:
    items = body.get("input") if isinstance(body.get("input"), list) else []
    calls: set[str] = set()
    previous: dict[str, Any] | None = None
    for item in items:
        kind = item.get("type", "message")
        if kind == "function_call":
            if str(item.get("id", "")).startswith("fc_") and (previous or {}).get("type") != "reasoning":
                return _invalid(
                    f"Item '{item['id']}' of type 'function_call' was provided without its required 'reasoning' item.",
                    "input",
                )
            calls.add(item.get("call_id"))
        if kind == "function_call_output" and item.get("call_id") not in calls:
            return _invalid(f"No tool call found for function call output with call_id {item.get('call_id')}.", "input")
        previous = item
    for tool in body.get("tools") or []:
        if tool.get("type") == "function" and "strict" not in tool:
            return _invalid(
                f"Invalid schema for function '{tool.get('name')}': strict mode requires every property in 'required'.",
                "tools",
                "invalid_function_parameters",
            )
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and limit < 16:
        return _invalid("Invalid 'max_output_tokens': integer below minimum value.", "max_output_tokens")
    return None


def _invalid(message: str, param: str | None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _responses_usage(reasoning: int) -> dict[str, Any]:
    return {
        "input_tokens": 30,
        "input_tokens_details": {"cached_tokens": 10},
        "output_tokens": 20 + reasoning,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": 50 + reasoning,
    }


def response_output(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Reasoning (when asked), then a call of the first tool after a user turn, else text."""
    items = body.get("input") if isinstance(body.get("input"), list) else [{"role": "user"}]
    last = items[-1] if items else {}
    output: list[dict[str, Any]] = []
    if (body.get("reasoning") or {}).get("effort") not in (None, "none"):
        output.append(
            {
                "id": "rs_fake",
                "type": "reasoning",
                "encrypted_content": "gAAAA-fake",
                "summary": [{"type": "summary_text", "text": "Thinking it over."}],
            }
        )
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    if tools and last.get("role") == "user" and body.get("tool_choice") != "none":
        output.append(
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
            }
        )
        output.append(
            {
                "id": "fc_fake",
                "type": "function_call",
                "call_id": "call_fake_1",
                "status": "completed",
                "name": tools[0]["name"],
                "arguments": '{"city":"Oslo"}',
            }
        )
    else:
        text = f"The tool said: {last.get('output')}" if last.get("type") == "function_call_output" else FIXED_REPLY
        output.append(
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    return output


def response_object(body: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    output = response_output(body)
    reasoning = 64 if any(i["type"] == "reasoning" for i in output) else 0
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": body.get("model"),
        "output": output,
        "usage": _responses_usage(reasoning),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


def response_events(body: dict[str, Any]) -> list[str]:
    """The named events OpenAI streams for `response_object(body)`, text and arguments in pieces."""
    done = response_object(body)
    events: list[dict[str, Any]] = []
    start = {**done, "status": "in_progress", "output": [], "usage": None}
    events += [{"type": "response.created", "response": start}, {"type": "response.in_progress", "response": start}]
    for index, item in enumerate(done["output"]):
        if item["type"] == "reasoning":
            events.append(
                {"type": "response.output_item.added", "output_index": index, "item": {**item, "summary": []}}
            )
            text = item["summary"][0]["text"]
            for piece in (text[:8], text[8:]):
                events.append(
                    {
                        "type": "response.reasoning_summary_text.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "summary_index": 0,
                        "delta": piece,
                    }
                )
        elif item["type"] == "message":
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress", "content": []},
                }
            )
            events.append(
                {
                    "type": "response.content_part.added",
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }
            )
            text = item["content"][0]["text"]
            for i, word in enumerate(text.split(" ")):
                events.append(
                    {
                        "type": "response.output_text.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "delta": word if i == 0 else " " + word,
                    }
                )
            events.append(
                {
                    "type": "response.output_text.done",
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "text": text,
                }
            )
        else:
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "arguments": "", "status": "in_progress"},
                }
            )
            for piece in ('{"city":', '"Oslo"}'):
                events.append(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "delta": piece,
                    }
                )
            events.append(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item["id"],
                    "output_index": index,
                    "arguments": item["arguments"],
                }
            )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": done})
    return [f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}" for n, e in enumerate(events)]


class Fake:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: deque[dict[str, Any]] = deque()
        self.record = True
        self.aborted = 0  # streams the other side closed before the end
        self.hung_up: list[float] = []  # seconds into a `hang` when the gateway closed the connection
        self.hung_up_at: list[float] = []  # ... and when, as time.time()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        if self.record:
            self.requests.append(
                {"method": request.method, "path": request.path, "headers": dict(request.headers), "body": body}
            )
        if self.script:
            return await self._scripted(request, self.script.popleft())
        try:
            return await self._serve(request, body)
        except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a body of the wrong shape: the real
            # APIs answer 400 to what they cannot read (found by tests/hardening/fuzz.py), never a 500
            message = f"Invalid request body ({type(exc).__name__})."
            if request.path.endswith("/messages"):
                return web.json_response(anthropic_fake.error("invalid_request_error", message), status=400)
            return web.json_response(_invalid(message, None), status=400)

    async def _serve(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if request.path.endswith("/messages"):
            return await self._anthropic(request, body)
        if request.path.endswith("/responses"):
            refusal = responses_refusal(body)
            if refusal:
                return web.json_response(refusal, status=400)
            if body.get("stream"):
                return await self._stream(request, response_events(body))
            return web.json_response(response_object(body))
        refusal = chat_refusal(body)
        if refusal:
            return web.json_response(refusal, status=400)
        if body.get("stream"):
            return await self._stream(request, [json.dumps(c) for c in stream_chunks(body)] + ["[DONE]"])
        return web.json_response(completion(body))

    async def _anthropic(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        refused = anthropic_fake.refusal(dict(request.headers), body)
        if refused:
            return web.json_response(refused[1], status=refused[0])
        if body.get("stream"):
            return await self._stream(request, anthropic_fake.events(body))
        return web.json_response(anthropic_fake.message(body))

    async def _scripted(self, request: web.Request, step: dict[str, Any]) -> web.StreamResponse:
        if step.get("delay"):
            await asyncio.sleep(step["delay"])
        transport = request.transport
        assert transport is not None
        if step.get("hang"):
            return await self._hang(transport, step["hang"])
        if step.get("reset"):
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return web.Response()
        if step.get("drop"):
            transport.close()
            return web.Response()
        headers = step.get("headers") or {}
        if "sse" in step:
            events: Iterable[str] = [e if isinstance(e, str) else json.dumps(e) for e in step["sse"]]
            if step.get("repeat"):  # a long stream without a long script: the events, over and over
                events = itertools.chain.from_iterable(itertools.repeat(events, step["repeat"]))
            return await self._stream(request, events, headers, step.get("event_delay", 0), step.get("die_after"))
        if step.get("trickle"):
            return await self._trickle(request, json.dumps(step.get("json", {})).encode(), step["trickle"])
        return web.json_response(step.get("json", {}), status=step.get("status", 200), headers=headers)

    async def _hang(self, transport: asyncio.BaseTransport, seconds: float) -> web.StreamResponse:
        """Answer nothing for `seconds`, noting when (if) the gateway closes the connection meanwhile."""
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            if transport.is_closing():
                self.hung_up.append(time.monotonic() - began)
                self.hung_up_at.append(time.time())
                break
            await asyncio.sleep(0.01)
        return web.Response(status=504)

    async def _trickle(self, request: web.Request, body: bytes, every: float) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        await response.prepare(request)
        try:
            for i in range(len(body)):
                await response.write(body[i : i + 1])
                await asyncio.sleep(every)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):  # reset, or "Connection lost" in a drain
            self.aborted += 1
            raise
        return response

    async def _stream(
        self,
        request: web.Request,
        events: Iterable[str],
        headers: dict[str, str] | None = None,
        event_delay: float = 0,
        die_after: int | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream", **(headers or {})})
        await response.prepare(request)
        try:
            for n, data in enumerate(events):
                if n == die_after:
                    assert request.transport is not None
                    request.transport.abort()  # no terminal event, no clean end of the body
                    return response
                if data.startswith(("event:", ":")):
                    await response.write(data.encode() + b"\n\n")  # a pre-framed named event or a comment
                else:
                    await response.write(b"data: " + data.encode() + b"\n\n")
                if event_delay:
                    await asyncio.sleep(event_delay)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):  # reset, or "Connection lost" in a drain
            self.aborted += 1  # the gateway hung up: what a client disconnect must cause
            raise
        return response

    async def add_script(self, request: web.Request) -> web.Response:
        steps = await request.json()
        self.script.extend(steps if isinstance(steps, list) else [steps])
        return web.json_response({"queued": len(self.script)})

    async def list_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"aborted": self.aborted, "hung_up": self.hung_up, "hung_up_at": self.hung_up_at})

    async def clear(self, request: web.Request) -> web.Response:
        self.requests.clear()
        self.script.clear()
        return web.json_response({"cleared": True})


def make_app(record: bool = True, max_upload_mb: int = 25) -> web.Application:
    fake = Fake()
    fake.record = record
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", fake.chat)
    app.router.add_post("/v1/responses", fake.chat)
    app.router.add_post("/v1/messages", fake.chat)  # Anthropic's Messages wire: tests/fakes/anthropic_fake.py
    MediaFake(fake, max_upload_mb).add_routes(app)
    add_control_routes(app, fake)
    return app


def add_control_routes(app: web.Application, fake: Fake) -> None:
    """The `/_fake/` control API every fake shares: script answers, read and clear the request log."""
    app.router.add_post("/_fake/script", fake.add_script)
    app.router.add_get("/_fake/requests", fake.list_requests)
    app.router.add_get("/_fake/stats", fake.stats)
    app.router.add_delete("/_fake/requests", fake.clear)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--no-record", action="store_true", help="keep no request log (benchmarks)")
    parser.add_argument("--max-upload-mb", type=int, default=25, help="largest audio upload (OpenAI: 25)")
    args = parser.parse_args()
    serve(make_app(record=not args.no_record, max_upload_mb=args.max_upload_mb), args.host, args.port)


def serve(app: web.Application, host: str, port: int) -> None:
    """Run a fake until interrupted, on uvloop when it is installed."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host=host, port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
