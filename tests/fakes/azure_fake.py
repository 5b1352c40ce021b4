"""A local Azure OpenAI resource, for end-to-end tests: OpenAI's answers in Azure's transport and quirks.

It refuses what Azure refuses: a request without the `api-key` header (401, and an `Authorization`
header is not accepted instead), a deployment path without a dated `api-version` (Azure's 404 "Resource
not found"), an unknown deployment (404 DeploymentNotFound). Its answers are the OpenAI fake's, with
Azure's additions: `prompt_filter_results` and per-choice `content_filter_results` on every answer, and a
leading stream chunk with empty `choices` that carries only the prompt's filter results.

Its content filter is triggered by markers in the last user message:
- `[[blocked]]`: the prompt is filtered, a 400 `content_filter` with `innererror` (what Azure sends);
- `[[blocked-200]]`: the filter's verdict comes back in a 200 (`prompt_filter_results` with
  `filtered: true` and no choices; as a stream, the leading chunk says so);
- `[[filtered-output]]`: the completion is filtered: `finish_reason: content_filter`.

Forms served: `/openai/deployments/{deployment}/chat/completions?api-version=…` and the GA v1 API,
`/openai/v1/chat/completions` and `/openai/v1/responses` (deployment in the body's `model`).
Run it alone with `python -m tests.fakes.azure_fake --port 9300 --deployments gpt-5.5,gpt-4.1`.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from aiohttp import web

from tests.fakes.openai_fake import CREATED, Fake, add_control_routes, completion, serve, stream_chunks

API_KEY = "azure-test-key-0123456789"
DATED_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
SAFE = {"filtered": False, "severity": "safe"}
CATEGORIES = ("hate", "self_harm", "sexual", "violence")
FILTER_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please"
    " modify your prompt and retry. To learn more about our content filtering policies please read our"
    " documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)


def _verdicts(filtered: str | None = None) -> dict[str, Any]:
    verdicts: dict[str, Any] = {c: dict(SAFE) for c in CATEGORIES}
    verdicts["jailbreak"] = {"filtered": filtered == "jailbreak", "detected": filtered == "jailbreak"}
    if filtered and filtered != "jailbreak":
        verdicts[filtered] = {"filtered": True, "severity": "high"}
    return verdicts


def _prompt_results(filtered: str | None = None) -> list[dict[str, Any]]:
    return [{"prompt_index": 0, "content_filter_results": _verdicts(filtered)}]


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return json.dumps(body.get("input") or "")


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


class AzureFake(Fake):
    def __init__(self, deployments: set[str]) -> None:
        super().__init__()
        self.deployments = deployments
        self.record = False  # requests are logged by `_answer`, with the query string

    async def deployment(self, request: web.Request) -> web.StreamResponse:
        version = request.query.get("api-version", "")
        if not DATED_VERSION.match(version):
            return _error(404, "404", "Resource not found")
        return await self._answer(request, request.match_info["deployment"])

    async def v1(self, request: web.Request) -> web.StreamResponse:
        version = request.query.get("api-version")
        if version not in (None, "v1", "preview", "latest"):
            return _error(400, "BadRequest", f"API version not supported: {version}")
        body = json.loads(await request.read() or b"{}")
        return await self._answer(request, str(body.get("model") or ""))

    async def _answer(self, request: web.Request, deployment: str) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        self.requests.append(
            {"method": request.method, "path": request.path_qs, "headers": dict(request.headers), "body": body}
        )
        if request.headers.get("api-key") != API_KEY:
            return _error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid"
                " key for an active subscription and use a correct regional API endpoint for your resource.",
            )
        if deployment not in self.deployments:
            return _error(404, "DeploymentNotFound", "The API deployment for this resource does not exist.")
        if self.script:
            return await self._scripted(request, self.script.popleft())
        text = _last_user_text(body)
        if "[[blocked]]" in text:
            inner = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": _verdicts("jailbreak")}
            return _error(400, "content_filter", FILTER_MESSAGE, param="prompt", type=None, innererror=inner)
        if request.path.endswith("/responses"):
            return await super().chat(request)  # the OpenAI fake's Responses answers (already logged above)
        blocked, output_filtered = "[[blocked-200]]" in text, "[[filtered-output]]" in text
        if body.get("stream"):
            return await self._stream(request, _azure_chunks(body, blocked, output_filtered))
        return web.json_response(_azure_completion(body, blocked, output_filtered))


def _azure_completion(body: dict[str, Any], blocked: bool, output_filtered: bool) -> dict[str, Any]:
    if blocked:
        return {
            "id": "chatcmpl-az-blocked",
            "object": "chat.completion",
            "created": CREATED,
            "model": body.get("model"),
            "prompt_filter_results": _prompt_results("jailbreak"),
            "choices": [],
        }
    answer = completion(body)
    answer["prompt_filter_results"] = _prompt_results()
    for choice in answer["choices"]:
        choice["content_filter_results"] = _verdicts("violence" if output_filtered else None)
        if output_filtered:
            choice["finish_reason"] = "content_filter"
            choice["message"]["content"] = ""
    return answer


def _azure_chunks(body: dict[str, Any], blocked: bool, output_filtered: bool) -> list[str]:
    lead = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
    lead["prompt_filter_results"] = _prompt_results("jailbreak" if blocked else None)
    if blocked:
        return [json.dumps(lead), "[DONE]"]
    chunks = stream_chunks({**body, "stream_options": {"include_usage": True}})
    out = [json.dumps(lead)]
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            choice["content_filter_results"] = _verdicts()
            if output_filtered and choice.get("finish_reason"):
                choice["finish_reason"] = "content_filter"
                choice["content_filter_results"] = _verdicts("violence")
        out.append(json.dumps(chunk))
    return [*out, "[DONE]"]


def make_app(deployments: set[str]) -> web.Application:
    fake = AzureFake(deployments)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", fake.deployment)
    app.router.add_post("/openai/v1/chat/completions", fake.v1)
    app.router.add_post("/openai/v1/responses", fake.v1)
    add_control_routes(app, fake)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--deployments", default="gpt-5.5,gpt-4.1", help="comma-separated deployment names")
    args = parser.parse_args()
    serve(make_app(set(args.deployments.split(","))), args.host, args.port)


if __name__ == "__main__":
    main()
