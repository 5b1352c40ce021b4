"""OpenCode's documents: the remote config `opencode auth login <url>` reads, and the provider config alone.

`GET /.well-known/opencode` answers `{auth: {command, env}, config}`: OpenCode runs `auth.command` (an
argv), stores its stdout as the key, exports it as `auth.env` on every start, and loads `config` as its
lowest-precedence config layer. `GET /external/opencode` answers that `config` alone, to save as
`opencode.json`. OpenCode validates config strictly (an unknown key is an error), so only keys its schema
defines are written: a provider entry for `@ai-sdk/openai-compatible` with the gateway's base URL as the
client sees it, `apiKey` as an `{env:VAR}` placeholder (never a key), and the live catalog's chat models
with their names, limits, costs and capability flags. Every name in them is `routes.toml` data
(`gateway.name` is the provider id; `[opencode]` the rest).
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response

from engine.catalog import Candidate
from engine.documents import json_response
from engine.errors import GatewayError
from engine.gateway import Gateway
from engine.proxy import Timer
from engine.spec.models import OpenCode
from engine.storage import KeyRecord

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_CHAT = "chat.completions"


def _settings(gw: Gateway) -> OpenCode:
    settings = gw.specs.routes.opencode
    if settings is None:  # engine check refuses OpenCode routes without [opencode]; this is the backstop
        raise GatewayError(404, "This gateway publishes no OpenCode configuration.", code="unknown_url")
    return settings


def client_origin(settings: OpenCode, request: Request[Any, Any, Any]) -> str:
    """The gateway's origin as the client reaches it: the configured public URL, else what a reverse proxy
    says in `X-Forwarded-Proto`/`X-Forwarded-Host` (first hop; malformed values are ignored), else the
    request's own scheme and host."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    headers = request.headers
    proto = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    host = headers.get("x-forwarded-host", "").split(",")[0].strip()
    scheme = proto if proto in ("http", "https") else request.url.scheme
    if not _HOST.match(host):
        host = request.url.netloc
    return f"{scheme}://{host}"


def api_prefix(gw: Gateway) -> str:
    """Where the OpenAI-compatible API lives: the chat route's path, less the `/chat/completions` the
    client appends itself."""
    for route in gw.specs.routes.routes:
        if route.operation == _CHAT and route.method == "POST":
            return route.path.removesuffix("/chat/completions")
    return ""


def model_entry(candidate: Candidate) -> dict[str, Any]:
    """One model as OpenCode's config schema describes it (`provider.<id>.models.<id>`)."""
    row = candidate.row
    entry: dict[str, Any] = {
        "name": row.name or candidate.public_id,
        "tool_call": row.tools,
        "reasoning": row.reasoning,
        "attachment": bool({"image", "pdf"} & set(row.modalities.input)),
        "temperature": not row.reasoning,  # the gateway drops sampling controls for reasoning models
        "modalities": {"input": list(row.modalities.input), "output": list(row.modalities.output)},
    }
    if row.context and row.max_output:
        entry["limit"] = {"context": row.context, "output": row.max_output}
    if row.release_date:
        entry["release_date"] = row.release_date
    if row.price is not None:
        cost: dict[str, float] = {"input": row.price.input, "output": row.price.output}
        if row.price.cached_input is not None:
            cost["cache_read"] = row.price.cached_input
        entry["cost"] = cost
    return entry


def provider_config(gw: Gateway, request: Request[Any, Any, Any]) -> dict[str, Any]:
    """OpenCode's `config` document: this gateway as one custom provider, with its live chat models."""
    settings = _settings(gw)
    models = {
        public_id: model_entry(candidates[0])
        for public_id, candidates in sorted(gw.catalog.live_models().items())
        if _CHAT in candidates[0].serves
    }
    provider = {
        "npm": settings.npm,
        "name": settings.name,
        "env": [settings.env],
        "options": {
            "baseURL": client_origin(settings, request) + api_prefix(gw),
            "apiKey": f"{{env:{settings.env}}}",
        },
        "models": models,
    }
    return {"$schema": "https://opencode.ai/config.json", "provider": {gw.specs.routes.gateway.name: provider}}


def _no_store(doc: dict[str, Any]) -> Response[Any]:
    response = json_response(doc)
    response.headers["cache-control"] = "no-cache"  # the catalog's live models change as providers do
    return response


async def wellknown(gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer) -> Response[Any]:
    settings = _settings(gw)
    auth = {"command": list(settings.auth_command), "env": settings.env}
    return _no_store({"auth": auth, "config": provider_config(gw, request)})


async def config(gw: Gateway, request: Request[Any, Any, Any], key: KeyRecord | None, timer: Timer) -> Response[Any]:
    return _no_store(provider_config(gw, request))
