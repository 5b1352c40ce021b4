"""Google's Gemini API, natively (`POST {base}/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`).

Lowering turns the canonical chat request into `contents` + `systemInstruction` + `tools` + `toolConfig`
+ `generationConfig`; raising turns `candidates` back into a `chat.completion` or chunks. What is
provider data (finish-reason table, error rules, which thinking knob a model takes, the JSON Schema
subset) lives in `specs/providers/gemini.toml`; this module is the part/message codec.

Thought signatures. Gemini 3 returns an encrypted `thoughtSignature` with the first `functionCall` part
of each step and refuses (400) a later turn whose function calls come back without it. The signature is
packed into the tool-call id the client sees (`engine.carry`, family `gemini`), so it survives clients
that echo only `id`, `type` and `function`, and is put back on the same part when lowering. History
without one (another provider's turns, a client that lost it) gets Google's documented placeholder.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine import carry
from engine.errors import GatewayError
from engine.wires.base import (
    JSON,
    Call,
    ChunkWriter,
    Lowered,
    StreamBroken,
    StreamItem,
    UpstreamError,
    Usage,
    chat_usage,
    event_object,
    finish_of,
)
from engine.wires.openai_responses import text_of
from engine.wires.sse import Event

_decode = msgspec.json.decode
_encode = msgspec.json.encode

CARRIER = "gemini"
# Why: Google's thought-signature FAQ documents this value for function calls that Gemini did not produce
# (history from another model, or a client that lost the signature); it skips validation instead of the
# 400 "Function call is missing a thought_signature".
SKIP_SIGNATURE = "skip_thought_signature_validator"

# Fields of the chat request this codec cannot honour on Gemini: refused, never silently lost. Hints with
# no Gemini counterpart (logit_bias, logprobs, user, metadata, service_tier ...) are left out: Gemini
# refuses unknown fields, so the request is built from the fields below and nothing passes through.
_REFUSED = {
    "audio": "audio output",
    "prediction": "predicted outputs",
    "web_search_options": "web search options",
    "functions": "legacy `functions` (use `tools`)",
    "function_call": "legacy `function_call` (use `tool_choice`)",
}
_GENERATION = {  # chat field → generationConfig field, copied as they are
    "temperature": "temperature",
    "top_p": "topP",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

# Carrier state: one flag byte, then the signature.
_UPSTREAM_ID = 1  # the tool-call id is Gemini's own `functionCall.id`: send it back
_SIG_BASE64 = 2  # the signature was base64 and is kept decoded (a third smaller in the id)
_SIG_TEXT = 4  # the signature is kept as the text received


def _refuse(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="unsupported_parameter")


# ---------------------------------------------------------------------------------------------- carrier


def pack_state(signature: str | None, upstream_id: bool) -> bytes:
    flags = _UPSTREAM_ID if upstream_id else 0
    if not signature:
        return bytes([flags]) if flags else b""
    try:
        raw = base64.b64decode(signature, validate=True)
        if base64.b64encode(raw).decode() == signature:  # only when it re-encodes exactly as received
            return bytes([flags | _SIG_BASE64]) + raw
    except (binascii.Error, ValueError):
        pass
    return bytes([flags | _SIG_TEXT]) + signature.encode()


def unpack_state(state: bytes) -> tuple[str | None, bool]:
    """(signature, the id is Gemini's own)."""
    if not state:
        return None, False
    flags, body = state[0], state[1:]
    if flags & _SIG_BASE64:
        signature: str | None = base64.b64encode(body).decode()
    elif flags & _SIG_TEXT:
        signature = body.decode(errors="replace")
    else:
        signature = None
    return signature, bool(flags & _UPSTREAM_ID)


# ---------------------------------------------------------------------------------------------- lowering


def _data_url(url: str) -> tuple[str, str] | None:
    """`data:<mime>;base64,<data>` → (mime, data)."""
    if not url.startswith("data:") or "," not in url:
        return None
    head, data = url[5:].split(",", 1)
    if not head.endswith(";base64"):
        return None
    return head.removesuffix(";base64") or "application/octet-stream", data


def _media(url: str, param: str) -> JSON:
    inline = _data_url(url)
    if inline is not None:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    if url.startswith(("https://", "http://", "gs://")):
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "application/octet-stream"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise _refuse(param, "Media parts need a data URL (`data:<type>;base64,...`) or an http(s) URL.")


def _user_part(part: Any, param: str) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return {"text": part.get("text") or ""}
    if kind == "image_url":
        return _media(str((part.get("image_url") or {}).get("url") or ""), f"{param}.image_url.url")
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        return {"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}", "data": audio.get("data") or ""}}
    if kind == "file":
        file = part.get("file") or {}
        if isinstance(file.get("file_data"), str):
            return _media(file["file_data"], f"{param}.file.file_data")
        raise _refuse(param, "File parts need `file_data` (a data URL); uploaded `file_id`s are OpenAI's.")
    raise _refuse(param, f"Content parts of type `{kind}` cannot be sent to this model.")


def _user_parts(content: Any, param: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"text": content}]
    return [_user_part(p, f"{param}[{i}]") for i, p in enumerate(content or [])]


def _arguments(call: JSON, param: str) -> JSON:
    raw = (call.get("function") or {}).get("arguments")
    if raw in (None, ""):
        return {}
    try:
        args = _decode(raw) if isinstance(raw, str) else raw
    except msgspec.DecodeError:
        raise GatewayError(400, "Tool-call arguments must be a JSON object.", param=param) from None
    if not isinstance(args, dict):
        raise GatewayError(400, "Tool-call arguments must be a JSON object.", param=param)
    return args


def _model_parts(message: JSON, index: int, carried: dict[str, bytes], names: dict[str, str]) -> list[JSON]:
    parts: list[JSON] = []
    text = text_of(message.get("content"))
    if text:
        parts.append({"text": text})
    for j, call in enumerate(message.get("tool_calls") or ()):
        param = f"messages[{index}].tool_calls[{j}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise _refuse(param, "Only function tool calls can be sent to this model.")
        call_id = str(call.get("id") or "")
        name = str((call.get("function") or {}).get("name") or "")
        names[call_id] = name
        signature, upstream_id = unpack_state(carried.get(call_id, b""))
        function: JSON = {"name": name, "args": _arguments(call, f"{param}.function.arguments")}
        if upstream_id:
            function["id"] = call_id
        part: JSON = {"functionCall": function}
        if j == 0 and signature is None:
            signature = SKIP_SIGNATURE  # a step Gemini did not sign (or whose signature is lost)
        if signature is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(message: JSON, index: int, names: dict[str, str], carried: dict[str, bytes]) -> JSON:
    call_id = str(message.get("tool_call_id") or "")
    if call_id not in names:
        raise GatewayError(
            400,
            f"`tool_call_id` {call_id!r} names no tool call of an earlier assistant message; Gemini needs the "
            "function's name, which only that call holds.",
            param=f"messages[{index}].tool_call_id",
        )
    content = message.get("content")
    text = text_of(content)
    try:
        value = _decode(text) if text else None
    except msgspec.DecodeError:
        value = None
    # Gemini takes an object; Google's convention is {"output": ...} for anything that is not one.
    response = value if isinstance(value, dict) else {"output": text}
    function: JSON = {"name": names[call_id], "response": response}
    if unpack_state(carried.get(call_id, b""))[1]:
        function["id"] = call_id
    return {"functionResponse": function}


def lower_contents(messages: list[JSON], carried: dict[str, bytes]) -> tuple[JSON | None, list[JSON]]:
    """Chat messages → (systemInstruction, contents). Consecutive turns of one role are merged, so tool
    results of one step form one `user` turn of `functionResponse` parts, as Gemini requires."""
    system: list[JSON] = []
    contents: list[JSON] = []
    names: dict[str, str] = {}  # tool-call id → function name, for the results that follow

    def add(role: str, parts: list[JSON]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            text = text_of(message.get("content"))
            if text:
                system.append({"text": text})
        elif role == "user":
            add("user", _user_parts(message.get("content"), f"messages[{i}].content"))
        elif role == "assistant":
            add("model", _model_parts(message, i, carried, names))
        elif role == "tool":
            add("user", [_function_response(message, i, names, carried)])
        else:
            raise _refuse(f"messages[{i}].role", f"Messages with role `{role}` cannot be sent to this model.")
    return ({"parts": system} if system else None), contents


def lower_tools(tools: list[Any]) -> list[JSON]:
    declarations: list[JSON] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise _refuse(f"tools[{i}]", "Only function tools can be sent to this model.")
        function = tool.get("function") or {}
        declaration: JSON = {"name": function.get("name")}
        if function.get("description"):
            declaration["description"] = function["description"]
        if isinstance(function.get("parameters"), dict):
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def lower_tool_choice(choice: Any) -> JSON:
    """OpenAI `tool_choice` → `functionCallingConfig`."""
    if isinstance(choice, str) and choice in _MODES:
        return {"mode": _MODES[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"mode": "ANY", "allowedFunctionNames": [(choice.get("function") or {}).get("name")]}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = [(t.get("function") or {}).get("name") for t in allowed.get("tools") or () if isinstance(t, dict)]
        # allowedFunctionNames goes only with ANY or VALIDATED; VALIDATED is "auto, within these".
        return {"mode": "ANY" if allowed.get("mode") == "required" else "VALIDATED", "allowedFunctionNames": names}
    raise _refuse("tool_choice", "`tool_choice` must be auto, none, required, a function, or allowed_tools.")


def lower_generation(body: JSON, call: Call) -> JSON:
    config: JSON = {gemini: body[chat] for chat, gemini in _GENERATION.items() if body.get(chat) is not None}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int):
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    thinking = _thinking(body.get("reasoning_effort"), call)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def _thinking(effort: Any, call: Call) -> JSON:
    """`reasoning_effort` → `thinkingConfig`: the model's one knob (catalog data), never both, and the
    thoughts themselves only when the client asked for reasoning."""
    if not effort:
        return {}
    thinking = call.row.thinking if call.row is not None else None
    config: JSON = {}
    if thinking is not None:
        if effort not in thinking.effort:
            takes = ", ".join(f"`{e}`" for e in thinking.effort)
            raise GatewayError(
                400,
                f"`reasoning_effort` `{effort}` is not one `{call.public_model}` takes; use one of {takes}.",
                param="reasoning_effort",
                code="unsupported_value",
            )
        config[thinking.knob] = thinking.effort[effort]
    if effort != "none":
        config["includeThoughts"] = True
    return config


# ---------------------------------------------------------------------------------------------- raising


def usage_of(metadata: Any) -> Usage | None:
    """`usageMetadata` → OpenAI usage: thoughts are completion tokens (and reasoning tokens); tool-use
    prompt tokens are prompt tokens."""
    if not isinstance(metadata, dict):
        return None
    prompt = int(metadata.get("promptTokenCount") or 0) + int(metadata.get("toolUsePromptTokenCount") or 0)
    thoughts = int(metadata.get("thoughtsTokenCount") or 0)
    completion = int(metadata.get("candidatesTokenCount") or 0) + thoughts
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(metadata.get("totalTokenCount") or 0) or prompt + completion,
        cached_tokens=int(metadata.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def blocked(doc: JSON) -> UpstreamError | None:
    """A prompt Gemini refused to answer (HTTP 200, `promptFeedback.blockReason`, no candidates).
    `type` is what gemini.toml's error rules match; the reason stays out of what clients see."""
    reason = (doc.get("promptFeedback") or {}).get("blockReason")
    if reason and not doc.get("candidates"):
        return UpstreamError(
            message=f"Gemini blocked the prompt ({reason}).", type="prompt_blocked", code=str(reason), status=400
        )
    return None


@dataclass
class _Step:
    """What one answer (one candidate) has produced so far: text, thoughts, function calls."""

    response_id: str
    text: list[str] = field(default_factory=list)
    thoughts: list[str] = field(default_factory=list)
    calls: list[JSON] = field(default_factory=list)  # {"functionCall": ..., "signature": ...}
    finish: str | None = None

    def take(self, part: Any) -> tuple[str, str] | None:
        """Record one part; returns ("content" | "reasoning_content", text) when it adds streamable text."""
        if not isinstance(part, dict):
            return None
        signature = part.get("thoughtSignature")
        if isinstance(part.get("functionCall"), dict):
            self.calls.append({"functionCall": part["functionCall"], "signature": signature})
            return None
        text = part.get("text")
        if signature and not text and self.calls and not self.calls[0]["signature"]:
            # Streams may deliver the step's signature on a later, empty part: it belongs to the first call.
            self.calls[0]["signature"] = signature
        if not isinstance(text, str) or not text:
            return None
        if part.get("thought") is True:
            self.thoughts.append(text)
            return "reasoning_content", text
        self.text.append(text)
        return "content", text

    def tool_calls(self) -> list[JSON]:
        out = []
        for index, entry in enumerate(self.calls):
            function = entry["functionCall"]
            name = str(function.get("name") or "")
            args = function.get("args") if isinstance(function.get("args"), dict) else {}
            arguments = _encode(args).decode()
            upstream_id = function.get("id")
            own = isinstance(upstream_id, str) and bool(upstream_id) and carry.ALPHABET.fullmatch(upstream_id)
            base = str(upstream_id) if own else self._synthesized(index, name, arguments, entry["signature"])
            state = pack_state(entry["signature"], bool(own))
            out.append(
                {
                    "id": carry.pack(base, CARRIER, state),
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
        return out

    def _synthesized(self, index: int, name: str, arguments: str, signature: Any) -> str:
        """The same answer always gets the same ids, streamed or not; different answers different ones."""
        seed = f"{self.response_id}\x00{index}\x00{name}\x00{arguments}\x00{signature or ''}"
        return f"call_{hashlib.sha256(seed.encode()).hexdigest()[:24]}"


def _finish(step: _Step, call: Call) -> str | UpstreamError:
    return finish_of(step.finish or "STOP", call, bool(step.calls), "Gemini")


def _candidate(doc: JSON) -> JSON:
    candidates = doc.get("candidates")
    first = candidates[0] if isinstance(candidates, list) and candidates else None
    return first if isinstance(first, dict) else {}


class GeminiEmbeddings:
    """OpenAI's `/embeddings` over Gemini's `models/{model}:batchEmbedContents`: one request per input text,
    `dimensions` as `outputDimensionality`, answered as OpenAI's list of float vectors (a client that asked
    for base64 gets them packed by the embeddings renderer). Google reports no token usage for embeddings,
    so none is metered."""

    name = "gemini_embeddings"
    shape = accepts = "embeddings"

    def lower(self, body: JSON, call: Call) -> Lowered:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise _refuse("input", "Gemini embeds text: send `input` as a string or a list of strings, not token ids.")
        model = f"models/{call.upstream_model}"
        dimensions = body.get("dimensions")
        sized: JSON = {"outputDimensionality": dimensions} if isinstance(dimensions, int) else {}
        requests = [{"model": model, "content": {"parts": [{"text": text}]}, **sized} for text in texts]
        return Lowered(f"/{model}:batchEmbedContents", {"requests": requests})

    def raise_json(self, doc: JSON, call: Call) -> JSON | UpstreamError:
        embeddings = doc.get("embeddings")
        if not isinstance(embeddings, list):
            return UpstreamError(message="The upstream answered without embeddings.", type="api_error", status=502)
        call.usage = Usage()
        data = [
            {"object": "embedding", "index": i, "embedding": e.get("values") if isinstance(e, dict) else None}
            for i, e in enumerate(embeddings)
        ]
        usage = {"prompt_tokens": 0, "total_tokens": 0}  # not reported by Google
        return {"object": "list", "data": data, "model": call.public_model, "usage": usage}

    async def raise_stream(self, events: AsyncIterator[Event], call: Call) -> AsyncIterator[StreamItem | UpstreamError]:
        raise StreamBroken("Gemini embeddings are not streamed")
        yield b""  # an async generator, as the interface says

    def error_of(self, body: bytes) -> UpstreamError:
        return GeminiWire().error_of(body)


class GeminiWire:
    name = "gemini"
    shape = "gemini"
    accepts = "chat"
    carrier = CARRIER
    siblings = {"embeddings": GeminiEmbeddings()}  # the Gemini API's other endpoints, by client shape

    def lower(self, body: JSON, call: Call) -> Lowered:
        for key, what in _REFUSED.items():
            if key in body:
                raise _refuse(key, f"`{key}` ({what}) cannot be honoured for this model on Google's Gemini API.")
        if isinstance(body.get("n"), int) and body["n"] > 1:
            raise _refuse("n", "This model answers one choice per request on the gateway; send `n: 1` or omit it.")
        system, contents = lower_contents(body.get("messages") or [], call.carried)
        out: JSON = {"contents": contents}
        if system is not None:
            out["systemInstruction"] = system
        if body.get("tools"):
            out["tools"] = lower_tools(body["tools"])
            if "tool_choice" in body:
                out["toolConfig"] = {"functionCallingConfig": lower_tool_choice(body["tool_choice"])}
        generation = lower_generation(body, call)
        if generation:
            out["generationConfig"] = generation
        model = f"/models/{call.upstream_model}"
        if call.stream:
            return Lowered(f"{model}:streamGenerateContent", out, {"alt": "sse"})
        return Lowered(f"{model}:generateContent", out)

    def raise_json(self, doc: JSON, call: Call) -> JSON | UpstreamError:
        call.usage = usage_of(doc.get("usageMetadata"))
        refusal = blocked(doc)
        if refusal is not None:
            return refusal
        candidate = _candidate(doc)
        step = _Step(str(doc.get("responseId") or ""), finish=candidate.get("finishReason"))
        for part in (candidate.get("content") or {}).get("parts") or ():
            step.take(part)
        finish = _finish(step, call)
        if isinstance(finish, UpstreamError):
            return finish
        calls = step.tool_calls()
        message: JSON = {
            "role": "assistant",
            "content": "".join(step.text) if step.text or not calls else None,
            "refusal": None,
        }
        if step.thoughts:
            message["reasoning_content"] = "".join(step.thoughts)
        if calls:
            message["tool_calls"] = calls
        answer: JSON = {
            "id": f"chatcmpl-{step.response_id or 'gemini'}",
            "object": "chat.completion",
            "created": call.created,
            "model": doc.get("modelVersion") or call.upstream_model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        }
        if call.usage is not None:
            answer["usage"] = chat_usage(call.usage)
        return answer

    async def raise_stream(self, events: AsyncIterator[Event], call: Call) -> AsyncIterator[StreamItem | UpstreamError]:
        stream = _Stream(call)
        async for event in events:
            doc = event_object(event.data)
            if isinstance(doc.get("error"), dict):
                yield gemini_error_from(doc)
                return
            refusal = blocked(doc)
            if refusal is not None:
                call.usage = usage_of(doc.get("usageMetadata"))
                yield refusal
                return
            for chunk in stream.on(doc):
                yield chunk
        if stream.step.finish is None:
            raise StreamBroken("upstream stream ended before a finishReason")
        for item in stream.end():
            yield item

    def error_of(self, body: bytes) -> UpstreamError:
        try:
            doc = _decode(body)
        except msgspec.DecodeError:
            return UpstreamError(message="")
        if isinstance(doc, list) and doc:  # the non-SSE stream form is a JSON array
            doc = doc[0]
        return gemini_error_from(doc) if isinstance(doc, dict) else UpstreamError(message="")


def gemini_error_from(doc: JSON) -> UpstreamError:
    """Google's `{"error": {"code", "message", "status", "details": [ErrorInfo...]}}`: `type` is the RPC
    status (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`...), `code` the ErrorInfo reason when there is one
    (`API_KEY_INVALID`), else the status. gemini.toml's error rules match on these."""
    error = doc.get("error")
    if not isinstance(error, dict):
        return UpstreamError(message="")
    status = error.get("status")
    reason = None
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and isinstance(detail.get("reason"), str):
            reason = detail["reason"]
            break
    code = error.get("code")
    return UpstreamError(
        message=str(error.get("message") or ""),
        type=str(status) if status else None,
        code=reason or (str(status) if status else None),
        status=code if isinstance(code, int) and 400 <= code <= 599 else None,
    )


class _Stream(ChunkWriter):
    """Gemini chunks → chat chunks. Text and thoughts stream as they come; function calls are held to the
    end of the stream (Gemini sends each whole), because their signature may arrive on a later part and
    must be packed into the id that the call's first fragment carries."""

    def __init__(self, call: Call) -> None:
        super().__init__("chatcmpl-gemini", call.created, call.upstream_model)
        self.call = call
        self.step = _Step("")

    def on(self, doc: JSON) -> list[JSON]:
        if not self.step.response_id and doc.get("responseId"):
            self.step.response_id = str(doc["responseId"])
            self.id = f"chatcmpl-{self.step.response_id}"
        self.model = doc.get("modelVersion") or self.model
        if doc.get("usageMetadata"):
            self.call.usage = usage_of(doc["usageMetadata"])
        candidate = _candidate(doc)
        if candidate.get("finishReason"):
            self.step.finish = candidate["finishReason"]
        out = []
        for part in (candidate.get("content") or {}).get("parts") or ():
            streamed = self.step.take(part)
            if streamed is not None:
                out.append(self.chunk({streamed[0]: streamed[1]}))
        return out

    def end(self) -> list[JSON | UpstreamError]:
        finish = _finish(self.step, self.call)
        if isinstance(finish, UpstreamError):
            return [finish]
        out: list[JSON | UpstreamError] = []
        for index, tool_call in enumerate(self.step.tool_calls()):
            out.append(self.chunk({"tool_calls": [{"index": index, **tool_call}]}))
        out.append(self.chunk({}, finish))
        if self.call.include_usage and self.call.usage is not None:
            out.append(self.usage_chunk(self.call.usage))
        return out
