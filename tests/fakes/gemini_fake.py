"""A local upstream that speaks Google's Gemini API (`models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`), for tests and benchmarks, refusing what Google refuses.

What it enforces, as the Gemini API does:
- `x-goog-api-key`: a wrong key is Google's 400 `API_KEY_INVALID`; unknown request fields are the proto
  parser's 400 `Invalid JSON payload received. Unknown name ...`.
- Thought signatures (Gemini 3 models): in the current turn (everything after the last user turn with
  ordinary content), the first `functionCall` part of every model step must carry a `thoughtSignature`,
  and it must be one this fake issued, unchanged, or Google's documented skip placeholder. Otherwise:
  400 `Function call is missing a thought_signature in functionCall parts...` (or a corrupted-signature 400).
- Turn structure: a `functionResponse` turn must follow a `functionCall` turn and answer each call.
- `thinkingConfig` with both `thinkingLevel` and `thinkingBudget`, or `thinkingLevel` on a 2.5 model: 400.
- Tool and response schemas: keywords outside the JSON Schema subset Google documents: 400.

How it answers: with a function call (plus a signature) when tools are offered and the last turn is the
user's; with two parallel calls (only the first signed) when the prompt names two cities; with a second,
sequential step (its own signature) after the first result when the prompt says "then"; with text that
quotes the tool result after a function response; with `promptFeedback.blockReason` when the prompt
contains BLOCKME, and a SAFETY finish when it contains UNSAFE. Thoughts come back when
`includeThoughts` is set. Streams split text over chunks, and on Flash models deliver a call's signature
on a later part with empty text, as Google's streams may.

The control API under `/_fake/` is the OpenAI fake's (script, requests, stats). Run it alone with
`python -m tests.fakes.gemini_fake --port 9200 --key KEY`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
from typing import Any

from aiohttp import web

from tests.fakes.openai_fake import Fake, add_control_routes, serve
from tests.fakes.openai_media_fake import vector

SKIP_SIGNATURES = {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
FIXED_REPLY = "Hello from the fake Gemini."
_REQUEST_FIELDS = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
    "labels",
}
_SCHEMA_KEYWORDS = {
    "$id",
    "$defs",
    "$ref",
    "$anchor",
    "type",
    "format",
    "title",
    "description",
    "enum",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "anyOf",
    "oneOf",
    "properties",
    "additionalProperties",
    "required",
    "propertyOrdering",
}


class Refused(Exception):
    def __init__(self, status: int, message: str, rpc: str = "INVALID_ARGUMENT", reason: str | None = None) -> None:
        super().__init__(message)
        body: dict[str, Any] = {"code": status, "message": message, "status": rpc}
        if reason:
            body["details"] = [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
            ]
        self.status = status
        self.body = {"error": body}


def _schema_problems(schema: Any, where: str) -> list[str]:
    if isinstance(schema, list):
        return [p for i, s in enumerate(schema) for p in _schema_problems(s, f"{where}[{i}]")]
    if not isinstance(schema, dict):
        return []
    problems = [f"{where}.{k}" for k in schema if k not in _SCHEMA_KEYWORDS]
    for key in ("properties", "$defs"):
        for name, sub in (schema.get(key) or {}).items():
            problems += _schema_problems(sub, f"{where}.{key}.{name}")
    for key in ("items", "prefixItems", "anyOf", "oneOf", "additionalProperties"):
        if key in schema:
            problems += _schema_problems(schema[key], f"{where}.{key}")
    return problems


def _current_turn(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Google validates signatures only after the last user turn with ordinary content."""
    start = 0
    for i, content in enumerate(contents):
        parts = content.get("parts") or []
        if content.get("role") == "user" and any("functionResponse" not in p for p in parts):
            start = i
    return contents[start:]


class GeminiFake(Fake):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.issued: set[str] = set()
        self.counter = 0

    async def generate(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        if self.record:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": dict(request.query),
                    "headers": dict(request.headers),
                    "body": body,
                }
            )
        model, _, method = request.match_info["target"].partition(":")
        if self.script:
            return await self._scripted(request, self.script.popleft())
        try:
            if request.headers.get("x-goog-api-key") != self.key:
                raise Refused(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")
            if method == "batchEmbedContents":
                return web.json_response(self.embed(model, body))
            if method not in ("generateContent", "streamGenerateContent"):
                raise Refused(404, f"Method {method} not found.", "NOT_FOUND")
            if not model.startswith("gemini-"):
                raise Refused(
                    404,
                    f"models/{model} is not found for API version v1beta, or is not supported for {method}.",
                    "NOT_FOUND",
                )
            self.check(model, body)
            answers = self.answer(model, body, stream=method == "streamGenerateContent")
        except Refused as refused:
            return web.json_response(refused.body, status=refused.status)
        except (TypeError, AttributeError, KeyError, ValueError) as exc:  # Google's answer to a body it cannot read
            refused = Refused(400, f"Invalid JSON payload received. ({type(exc).__name__})")
            return web.json_response(refused.body, status=400)
        if method == "streamGenerateContent":
            if request.query.get("alt") != "sse":
                return web.json_response(answers)  # without alt=sse Google streams one JSON array
            return await self._stream(request, [json.dumps(a) for a in answers])
        return web.json_response(answers[0])

    def embed(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """`batchEmbedContents`: Google's checks (each request names this model, has text parts, a
        dimensionality in range), then one deterministic vector per request."""
        if not model.startswith("gemini-embedding"):
            raise Refused(400, f"models/{model} does not support batchEmbedContents.")
        unknown = set(body) - {"requests"}
        if unknown:
            name = sorted(unknown)[0]
            raise Refused(400, f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')
        vectors = []
        for i, request in enumerate(body.get("requests") or []):
            if request.get("model") != f"models/{model}":
                raise Refused(400, f"requests[{i}].model must be models/{model}.")
            parts = (request.get("content") or {}).get("parts") or []
            if not parts or not all(isinstance(p.get("text"), str) for p in parts):
                raise Refused(400, f"requests[{i}].content must have text parts.")
            size = request.get("outputDimensionality", 3072)
            if not isinstance(size, int) or not 1 <= size <= 3072:
                raise Refused(400, f"requests[{i}].outputDimensionality must be between 1 and 3072.")
            vectors.append({"values": vector("".join(p["text"] for p in parts), size)})
        return {"embeddings": vectors}

    # ------------------------------------------------------------------ what Google refuses

    def check(self, model: str, body: dict[str, Any]) -> None:
        for key in body:
            if key not in _REQUEST_FIELDS:
                raise Refused(400, f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
        contents = body.get("contents") or []
        if not contents:
            raise Refused(400, "* GenerateContentRequest.contents: contents is not specified")
        config = body.get("generationConfig") or {}
        thinking = config.get("thinkingConfig") or {}
        if "thinkingLevel" in thinking and "thinkingBudget" in thinking:
            raise Refused(400, "You can only set one of thinking budget and thinking level.")
        if "thinkingLevel" in thinking and not model.startswith("gemini-3"):
            raise Refused(400, "Thinking level is not supported for this model.")
        problems = []
        for i, tool in enumerate(body.get("tools") or []):
            for j, declaration in enumerate(tool.get("functionDeclarations") or []):
                if "parameters" in declaration and "parametersJsonSchema" in declaration:
                    raise Refused(400, "parameters and parametersJsonSchema are mutually exclusive.")
                where = f"tools[{i}].function_declarations[{j}].parameters_json_schema"
                problems += _schema_problems(declaration.get("parametersJsonSchema"), where)
        problems += _schema_problems(config.get("responseJsonSchema"), "generation_config.response_json_schema")
        if problems:
            raise Refused(400, f"Invalid JSON schema: unsupported keyword at {problems[0]}.")
        self._check_turns(contents)
        if model.startswith("gemini-3"):
            self._check_signatures(contents)

    def _check_turns(self, contents: list[dict[str, Any]]) -> None:
        for i, content in enumerate(contents):
            if content.get("role") not in ("user", "model"):
                raise Refused(400, f"Please use a valid role: user, model. (contents[{i}])")
            responses = [p for p in content.get("parts") or [] if "functionResponse" in p]
            if not responses:
                continue
            previous = contents[i - 1] if i else {}
            calls = [p for p in previous.get("parts") or [] if "functionCall" in p]
            if previous.get("role") != "model" or not calls:
                raise Refused(
                    400,
                    "Please ensure that function response turn comes immediately after a function call turn.",
                )
            if len(responses) != len(calls):
                raise Refused(
                    400,
                    "Please ensure that the number of function response parts is equal to the number of "
                    "function call parts of the function call turn.",
                )
            for part in responses:
                if not isinstance(part["functionResponse"].get("response"), dict):
                    raise Refused(400, "Invalid value at 'contents.parts.function_response.response': not a Struct")

    def _check_signatures(self, contents: list[dict[str, Any]]) -> None:
        position = 0
        for content in _current_turn(contents):
            calls = [p for p in content.get("parts") or [] if "functionCall" in p]
            if content.get("role") != "model" or not calls:
                position += len(content.get("parts") or [])
                continue
            first = calls[0]
            signature = first.get("thoughtSignature")
            if not signature:
                name = first["functionCall"].get("name")
                raise Refused(
                    400,
                    "Function call is missing a thought_signature in functionCall parts. This is required for "
                    "tools to work correctly, and missing thought_signature may lead to degraded model "
                    f"performance. Additional data, function call `default_api:{name}` , position {position}. "
                    "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                )
            for part in calls:
                given = part.get("thoughtSignature")
                if given and given not in self.issued and given not in SKIP_SIGNATURES:
                    raise Refused(400, "Corrupted thought signature.")
            position += len(content.get("parts") or [])

    # ------------------------------------------------------------------ how it answers

    def _signature(self, seed: str) -> str:
        self.counter += 1
        digest = hashlib.sha512(f"{seed}/{self.counter}".encode()).digest()
        signature = base64.b64encode(digest * 3).decode()  # ~260 characters, like real ones
        self.issued.add(signature)
        return signature

    def answer(self, model: str, body: dict[str, Any], stream: bool) -> list[dict[str, Any]]:
        """The answer as a list of GenerateContentResponse chunks (one when not streaming)."""
        contents = body["contents"]
        last = contents[-1]
        prompt = " ".join(p.get("text", "") for p in last.get("parts") or [] if isinstance(p.get("text"), str))
        response_id = f"fake-{self.counter + 1}"
        usage = {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19}
        if "BLOCKME" in prompt:
            blocked = {
                "promptFeedback": {
                    "blockReason": "SAFETY",
                    "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}],
                },
                "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                "modelVersion": model,
                "responseId": response_id,
            }
            return [blocked]
        config = body.get("generationConfig") or {}
        thoughts = bool((config.get("thinkingConfig") or {}).get("includeThoughts"))
        parts: list[dict[str, Any]] = []
        if thoughts:
            parts.append({"text": "Thinking about what was asked.", "thought": True})
            usage["thoughtsTokenCount"] = 5
            usage["totalTokenCount"] += 5
        tools = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
        wants_call = tools and mode != "NONE" and last.get("role") == "user" and prompt
        finish = "STOP"
        if "UNSAFE" in prompt:
            finish = "SAFETY"
        elif wants_call:
            cities = ["Oslo", "Bergen"] if "Bergen" in prompt else ["Oslo"]
            for i, city in enumerate(cities):
                call: dict[str, Any] = {"functionCall": {"name": tools[0]["name"], "args": {"city": city}}}
                if i == 0:
                    call["thoughtSignature"] = self._signature(f"{model}/{city}")
                parts.append(call)
        elif self._next_step(contents, tools):
            call = {"functionCall": {"name": tools[0]["name"], "args": {"city": "Bergen"}}}
            parts.append({**call, "thoughtSignature": self._signature(f"{model}/step")})
        else:
            responses = [p["functionResponse"] for p in last.get("parts") or [] if "functionResponse" in p]
            if responses:
                parts.append({"text": "The tool said: " + json.dumps([r["response"] for r in responses])})
            else:
                parts.append({"text": FIXED_REPLY})
            parts[-1]["thoughtSignature"] = self._signature(f"{model}/text")
        done = {"finishReason": finish, "index": 0}
        if not stream:
            candidate = {"content": {"role": "model", "parts": parts}, **done}
            return [
                {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}
            ]
        return self._chunks(model, parts, done, usage, response_id)

    @staticmethod
    def _next_step(contents: list[dict[str, Any]], tools: list[dict[str, Any]]) -> bool:
        """A prompt like "Oslo, then Bergen" takes a second, sequential step after the first call's result."""
        turn = _current_turn(contents)
        prompt = " ".join(p.get("text", "") for p in turn[0].get("parts") or [] if isinstance(p.get("text"), str))
        steps = sum(1 for c in turn if c.get("role") == "model" and any("functionCall" in p for p in c["parts"]))
        return bool(tools) and "then" in prompt and steps == 1 and "functionResponse" in turn[-1]["parts"][0]

    def _chunks(
        self, model: str, parts: list[dict[str, Any]], done: dict[str, Any], usage: dict[str, Any], response_id: str
    ) -> list[dict[str, Any]]:
        pieces: list[dict[str, Any]] = []
        trailing: dict[str, Any] | None = None
        for part in parts:
            if "text" in part and not part.get("thought"):
                words = part["text"].split(" ")
                pieces += [{"text": w if i == 0 else " " + w} for i, w in enumerate(words)]
                if part.get("thoughtSignature"):
                    trailing = {"text": "", "thoughtSignature": part["thoughtSignature"]}
            elif "functionCall" in part and part.get("thoughtSignature") and "flash" in model:
                pieces.append({"functionCall": part["functionCall"]})  # its signature comes on a later part
                trailing = {"text": "", "thoughtSignature": part["thoughtSignature"]}
            else:
                pieces.append(part)
        chunks = [
            {"candidates": [{"content": {"role": "model", "parts": [p]}, "index": 0}], "modelVersion": model}
            for p in pieces
        ]
        last_parts = [trailing] if trailing else [{"text": ""}]
        chunks.append(
            {
                "candidates": [{"content": {"role": "model", "parts": last_parts}, **done}],
                "usageMetadata": usage,
                "modelVersion": model,
            }
        )
        for chunk in chunks:
            chunk["responseId"] = response_id
        return chunks


def make_app(key: str, record: bool = True) -> web.Application:
    fake = GeminiFake(key)
    fake.record = record
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1beta/models/{target}", fake.generate)
    add_control_routes(app, fake)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--key", default=os.environ.get("GEMINI_FAKE_KEY", "gemini-test-key"))
    parser.add_argument("--no-record", action="store_true", help="keep no request log (benchmarks)")
    args = parser.parse_args()
    serve(make_app(args.key, record=not args.no_record), args.host, args.port)


if __name__ == "__main__":
    main()
