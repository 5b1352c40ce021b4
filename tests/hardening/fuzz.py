"""Fuzzing every public route: hypothesis draws requests, the gateway must answer each in OpenAI's shape.

The routes are routes.toml's, read through the spec loader, so a new route is fuzzed without a change here.
A request is drawn for a route from its operation's canonical requests (tests/requests/<operation>/), then
mutated: a value anywhere replaced by arbitrary JSON, a field dropped, the field names of the operation's
request schema given values of any kind; or the body is any JSON at all, or bytes that are not JSON, or JSON
nested past the depth bound. Headers vary too: the content type (JSON, none, text/plain, a form, multipart),
the gateway key (good, missing, wrong), and path parameters (model ids with slashes, job ids).

Every answer is checked (`Tally.check`): no 5xx, and every error in OpenAI's four-key shape; a success is
a JSON object, an SSE stream of JSON events, or bytes where the operation answers bytes; no traceback or
provider key in any answer. The figures (cases, 5xx, non-OpenAI-shaped) are printed at the end of a run.

CI runs a small deterministic sample in process and a smaller one against `engine serve`
(tests/hardening/test_fuzz.py). A long run, on demand:

    .venv/bin/python -m tests.hardening.fuzz --examples 5000            # in process, random seed
    .venv/bin/python -m tests.hardening.fuzz --examples 500 --serve     # against `engine serve`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine.operations import OPERATIONS
from engine.spec.loader import load_specs
from tests.conftest import REPO, load_corpus

REQUESTS = REPO / "tests" / "requests"
MARKERS = ("Traceback", 'File "', "sk-test-", "sk-ant-test", "gsk-test", "sk-or-test")


# ------------------------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as routes.toml writes it, with `{name:type}` parameters
    operation: str
    keyed: bool

    @property
    def body(self) -> str:
        return OPERATIONS[self.operation].body


def public_routes(specs_dir: Path) -> list[Route]:
    specs = load_specs(specs_dir)
    return [Route(r.method, r.path, r.operation, r.auth == "gateway_key") for r in specs.routes.routes]


# ------------------------------------------------------------------------------------------- requests


@dataclass
class Case:
    """One drawn request."""

    route: Route
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None = None
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None

    def describe(self) -> str:
        shown = self.content[:3000] if self.content is not None else {"data": self.data, "files": self.files}
        return f"{self.method} {self.url} {self.headers} {shown!r}"


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30, -(10**30)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", "auto", "none", "function", "user", "assistant", "text", "input_text", "json_schema"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _replace(value: Any, path: tuple[Any, ...], new: Any, drop: bool = False) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copied: Any = dict(value) if isinstance(value, dict) else list(value)
    if rest:
        copied[head] = _replace(copied[head], rest, new, drop)
    elif drop:
        del copied[head]
    else:
        copied[head] = new
    return copied


@st.composite
def mutated(draw: st.DrawFn, seed: Any, names: list[str]) -> Any:
    """`seed` unchanged (one case in six), or with one to four changes: a value turned into one of another
    JSON type (the mistake that reaches code which trusted a type), replaced by anything, dropped, or a field
    of the request schema's names (at any depth) set to anything."""
    body = seed
    changes = draw(st.sampled_from([0, 1, 1, 2, 3, 4]))
    for _ in range(changes):
        paths = list(_paths(body))
        # a field name first, then one of its places: each kind of field is hit as often as any other,
        # however many schema keywords or messages the body has
        groups: dict[Any, list[tuple[Any, ...]]] = {}
        for place in paths:
            groups.setdefault(place[-1] if place and isinstance(place[-1], str) else "[]", []).append(place)
        path = draw(st.sampled_from(groups[draw(st.sampled_from(sorted(groups, key=str)))]))
        action = draw(st.sampled_from(["retype"] * 4 + ["replace", "replace", "drop", "name", "name"]))
        if action == "drop" and path:
            body = _replace(body, path, None, drop=True)
        elif action == "name":
            holders = [p for p in paths if isinstance(_at(body, p), dict)]
            holder = draw(st.sampled_from(holders)) if holders else ()
            if isinstance(_at(body, holder), dict):
                body = _replace(body, (*holder, draw(st.sampled_from(names))), draw(json_values))
        elif action == "retype":
            kind = _kind(_at(body, path))
            body = _replace(body, path, draw(json_values.filter(lambda v, kind=kind: _kind(v) != kind)))
        else:
            body = _replace(body, path, draw(json_values))
    return body


def _kind(value: Any) -> str:
    return "number" if type(value) in (int, float) else type(value).__name__


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


# Field names of OpenAI's requests beyond what the validators model, so random objects hit real fields.
OPENAI_NAMES = [
    "arguments",
    "call_id",
    "content",
    "detail",
    "effort",
    "file",
    "file_data",
    "file_id",
    "format",
    "function",
    "function_call",
    "function_call_output",
    "image_url",
    "include_usage",
    "input",
    "input_audio",
    "input_image",
    "input_text",
    "instructions",
    "json_schema",
    "max_output_tokens",
    "max_tokens",
    "messages",
    "metadata",
    "model",
    "n",
    "name",
    "output",
    "parameters",
    "previous_response_id",
    "reasoning",
    "reasoning_effort",
    "response_format",
    "role",
    "schema",
    "stop",
    "store",
    "stream",
    "stream_options",
    "strict",
    "summary",
    "temperature",
    "text",
    "tool_call_id",
    "tool_calls",
    "tool_choice",
    "tools",
    "top_p",
    "type",
    "url",
    "user",
    "voice",
    "dimensions",
    "encoding_format",
    "prompt",
    "size",
    "seconds",
    "response_format",
    "speed",
]


@functools.cache
def _schema_names(operation: str) -> list[str]:
    """Every property name in the operation's request schema (tools, messages, parts, ...), plus OpenAI's."""
    from pydantic import TypeAdapter

    from engine import validate, validate_media

    models = {
        "chat.completions": validate.ChatCompletionRequest,
        "responses": validate.ResponsesRequest,
        "embeddings": validate_media.EmbeddingsRequest,
        "images.generations": validate_media.ImagesRequest,
        "audio.speech": validate_media.SpeechRequest,
    }
    names = set(OPENAI_NAMES)
    if operation in models:
        _collect(TypeAdapter(models[operation]).json_schema(), names)
    return sorted(names)


def _collect(schema: Any, names: set[str]) -> None:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                names.update(value)
            _collect(value, names)
    elif isinstance(schema, list):
        for item in schema:
            _collect(item, names)


@functools.cache
def _seeds(operation: str) -> list[Any]:
    folder = {"chat.completions": "chat"}.get(operation, operation)
    corpus = load_corpus(REQUESTS / folder) if (REQUESTS / folder).is_dir() else {}
    return list(corpus.values()) or [{}]


WEIGHTS = {"chat.completions": 4, "responses": 4}
# A model of each way a chat or Responses request is served: OpenAI's chat and Responses wires (native
# /responses), an OpenAI-compatible chat provider (/responses bridged over chat), Anthropic, Gemini.
ONE_PER_WIRE = {
    "openai/gpt-4.1",
    "openai/gpt-5.5",
    "meta-llama/llama-3.3-70b",
    "anthropic/claude-sonnet-4.6",
    "google/gemini-2.5-flash",
}

CONTENT_TYPES = [
    "application/json",
    "application/json",
    "application/json",
    "application/json; charset=utf-8",
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/vnd.example+json",
    "application/xml",
    "",
]


def _nested(depth: int) -> bytes:
    return b'{"model": "openai/gpt-4.1", "messages": ' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def raw_body(draw: st.DrawFn, body: Any) -> bytes:
    kind = draw(st.sampled_from(["json"] * 15 + ["garbage", "truncated", "deep", "bad-utf8", "nan"]))
    encoded = json.dumps(body).encode()
    if kind == "garbage":
        return draw(st.binary(max_size=64))
    if kind == "truncated":
        return encoded[: draw(st.integers(0, max(len(encoded) - 1, 0)))]
    if kind == "deep":
        return _nested(draw(st.sampled_from([65, 200, 999, 5000])))
    if kind == "bad-utf8":
        return encoded.replace(b'"', b'"\xff\xfe', 1)
    if kind == "nan":
        return encoded.replace(b"}", b', "temperature": NaN}', 1) if encoded.endswith(b"}") else b"NaN"
    return encoded


path_text = st.text(st.characters(codec="utf-8", exclude_characters="?#"), max_size=30)


@st.composite
def cases(draw: st.DrawFn, routes: list[Route], models: list[str], key: str) -> Case:
    # the routes with the most machinery behind them (wire selection, lowering, bridging) are drawn more often
    route = draw(st.sampled_from([r for r in routes for _ in range(WEIGHTS.get(r.operation, 1))]))
    headers: dict[str, str] = {}
    auth = draw(st.sampled_from(["good"] * 26 + ["none", "wrong", "basic", "prefix-only"]))
    headers |= {
        "good": {"authorization": f"Bearer {key}"},
        "none": {},
        "wrong": {"authorization": "Bearer compose-notakey_0000000000000000"},
        "basic": {"authorization": "Basic dXNlcjpwYXNz"},
        "prefix-only": {"authorization": "Bearer compose-"},
    }[auth]
    url = route.path
    for name in ("{model:path}", "{video_id:str}"):
        if name in url:
            value = draw(st.sampled_from(models) | st.sampled_from(["video_gw0001", "x/y/z", "%2F..%2F"]) | path_text)
            url = url.replace(name, urllib.parse.quote(value.lstrip("/"), safe="/") or "x")
    detour = draw(st.sampled_from(["none"] * 18 + ["method", "unknown-path"]))
    if detour == "method":  # the route's path with the other method: a 405 in OpenAI's shape
        return Case(route, "POST" if route.method == "GET" else "GET", url, headers, content=b"{}")
    if detour == "unknown-path":
        return Case(route, route.method, url.rstrip("/") + "/" + urllib.parse.quote(draw(path_text)), headers)
    if route.method == "GET":
        query = draw(st.dictionaries(st.sampled_from(["variant", "limit", "model", "x"]), path_text, max_size=2))
        if query:
            url += "?" + str(httpx.QueryParams(query))
        return Case(route, "GET", url, headers)
    seed = dict(draw(st.sampled_from(_seeds(route.operation))))
    if "model" in seed or route.operation in ("chat.completions", "responses"):
        wires = [m for m in models if m in ONE_PER_WIRE]
        seed["model"] = draw(st.sampled_from(wires if wires and draw(st.integers(0, 3)) else models))
    source = draw(st.sampled_from(["mutated"] * 6 + ["any"]))
    names = _schema_names(route.operation)
    body = draw(mutated(seed, names)) if source == "mutated" else draw(json_values)
    if route.body == "multipart" and draw(st.booleans()):
        fields = {k: v for k, v in (body.items() if isinstance(body, dict) else ()) if not isinstance(v, dict)}
        data = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        files = None
        if draw(st.booleans()):
            files = {"file": ("clip.mp3", draw(st.binary(min_size=1, max_size=64)), "audio/mpeg")}
        return Case(route, "POST", url, headers, data=data, files=files)
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type is not None:
        headers["content-type"] = content_type
    return Case(route, "POST", url, headers, content=draw(raw_body(body)))


WRONG_TYPES: list[Any] = [5, "x", None, True, {"x": 1}, [1]]
# The model of each sweep case: the first always, and then one of the rest in turn. A chat or Responses
# request goes to one served natively and to one of the others (bridged over chat, Anthropic's wire, Gemini's).
SWEEP_MODELS: dict[str, tuple[str, list[str]]] = {
    "chat.completions": (
        "openai/gpt-4.1",
        ["anthropic/claude-sonnet-4.6", "google/gemini-2.5-flash", "meta-llama/llama-3.3-70b"],
    ),
    "responses": (
        "openai/gpt-5.5",
        ["meta-llama/llama-3.3-70b", "anthropic/claude-sonnet-4.6", "google/gemini-2.5-flash"],
    ),
    "embeddings": ("openai/text-embedding-3-small", ["google/gemini-embedding-001"]),
    "images.generations": ("openai/gpt-image-1", []),
    "audio.speech": ("openai/gpt-4o-mini-tts", []),
    "audio.transcriptions": ("openai/whisper-1", []),
    "videos.generations": ("openai/sora-2", []),
}


def sweep(routes: list[Route], key: str) -> list[Case]:
    """Type confusion, systematically: every place in every canonical request of every JSON route, given a
    value of another JSON type, once. Random fuzzing reaches a given field rarely; this reaches each."""
    found: list[Case] = []
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    for route in routes:
        if route.method != "POST" or route.body == "none":
            continue
        first, rest = SWEEP_MODELS[route.operation]
        turn = 0
        for seed in _seeds(route.operation):
            for path in list(_paths(seed))[1:]:
                wrong = next(v for v in WRONG_TYPES if _kind(v) != _kind(_at(seed, path)))
                for model in [first, rest[turn % len(rest)]] if rest else [first]:
                    body = _replace({**seed, "model": model}, path, wrong)
                    found.append(Case(route, "POST", route.path, headers, content=json.dumps(body).encode()))
                turn += 1
    return found


# ------------------------------------------------------------------------------------------- checks


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    unshaped: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)

    def check(self, case: Case, status: int, headers: httpx.Headers, body: bytes) -> None:
        self.cases += 1
        self.statuses[status] += 1
        seen = f"{case.describe()} -> {status} {body[:400]!r}"
        if status >= 500:
            self.server_errors.append(seen)
        if not _shaped(case, status, headers, body):
            self.unshaped.append(seen)
        text = body.decode("utf-8", "replace") + "".join(f"{k}: {v}\n" for k, v in headers.items())
        if any(marker in text for marker in MARKERS):
            self.leaks.append(seen)

    def figures(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"fuzz: {self.cases} cases in {time.monotonic() - self.began:.1f} s; 5xx: {len(self.server_errors)}; "
            f"non-OpenAI-shaped: {len(self.unshaped)}; leaks: {len(self.leaks)}; statuses: {statuses}"
        )

    def problems(self) -> list[str]:
        return [*self.server_errors[:5], *self.unshaped[:5], *self.leaks[:5]]


def openai_error(body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    error = doc.get("error") if isinstance(doc, dict) and set(doc) == {"error"} else None
    return (
        isinstance(error, dict)
        and set(error) == {"message", "type", "param", "code"}
        and isinstance(error["message"], str)
        and bool(error["message"])
        and isinstance(error["type"], str)
        and (error["param"] is None or isinstance(error["param"], str))
        and (error["code"] is None or isinstance(error["code"], str))
    )


def _shaped(case: Case, status: int, headers: httpx.Headers, body: bytes) -> bool:
    if status >= 400:
        return openai_error(body)
    kind = headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/json":
        try:
            return isinstance(json.loads(body), dict)
        except ValueError:
            return False
    if kind == "text/event-stream":
        lines = _SSE_LINES.split(body.decode("utf-8", "replace"))
        return all(_event_ok(line) for line in lines if line.startswith("data:"))
    answers = OPERATIONS[case.route.operation].answers
    return "bytes" in answers and status == 200


# SSE ends a line at CR, LF or CRLF only (WHATWG HTML, "Parsing an event stream"); `str.splitlines` also splits
# at U+0085, U+2028 and others that JSON may carry unescaped in a string (found by a fuzzed key holding U+0085).
_SSE_LINES = re.compile(r"\r\n|\r|\n")


def _event_ok(line: str) -> bool:
    data = line[5:].strip()
    if data == "[DONE]":
        return True
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------- targets


Send = Callable[[Case], tuple[int, httpx.Headers, bytes]]


def fuzz(send: Send, routes: list[Route], models: list[str], key: str, examples: int, seed: int | None) -> Tally:
    """Run `examples` drawn cases through `send`; a case is never retried or shrunk: the tally is the result."""
    tally = Tally()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate),  # no shrinking: every case counts once
    )
    @given(cases(routes, models, key))
    def one(case: Case) -> None:
        status, headers, body = send(case)
        tally.check(case, status, headers, body)

    one() if seed is None else _seeded(one, seed)()
    return tally


def run(send: Send, drawn: list[Case]) -> Tally:
    tally = Tally()
    for case in drawn:
        tally.check(case, *send(case))
    return tally


def _seeded(test: Any, seed: int) -> Any:
    from hypothesis import seed as with_seed

    return with_seed(seed)(test)


class InProcessTarget:
    """The app in this process over ASGI (no uvicorn), its upstreams the real fakes over loopback."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        from engine.app import build_app
        from engine.gateway import Gateway

        specs = tmp / "specs"
        shutil.copytree(REPO / "specs", specs)
        for extra in (REPO / "tests" / "fixtures" / "providers").glob("*.toml"):
            shutil.copy(extra, specs / "providers" / extra.name)
        self.specs = specs
        self.loop = asyncio.new_event_loop()
        self.gateway = Gateway.build(specs, str(tmp / "engine.sqlite3"), None, env)
        self.loop.run_until_complete(self.gateway.startup())
        prefix = self.gateway.specs.routes.gateway.key_prefix
        self.key: str = self.loop.run_until_complete(self.gateway.database.create_key("fuzz", prefix))
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(self.gateway)), timeout=60)

    def models(self) -> list[str]:
        # tests/fixtures' `test/*` models fail by design (an unreachable and a slow provider)
        live = sorted(m for m in self.gateway.catalog.live_models() if not m.startswith("test/"))
        return [*live, "nobody/nothing", "", "openai/"]

    def send(self, case: Case) -> tuple[int, httpx.Headers, bytes]:
        async def go() -> httpx.Response:
            return await self.client.request(
                case.method,
                "http://gateway.test" + case.url,
                headers=case.headers,
                content=case.content,
                data=case.data,
                files=case.files,
            )

        response = self.loop.run_until_complete(go())
        return response.status_code, response.headers, response.content

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.gateway.shutdown())
        self.loop.close()


class HTTPTarget:
    """`engine serve`, over HTTP."""

    def __init__(self, root: str, key: str) -> None:
        self.key = key
        self.client = httpx.Client(base_url=root, timeout=60)

    def send(self, case: Case) -> tuple[int, httpx.Headers, bytes]:
        response = self.client.request(
            case.method, case.url, headers=case.headers, content=case.content, data=case.data, files=case.files
        )
        return response.status_code, response.headers, response.content

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------------------------------------- on demand


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a random one)")
    parser.add_argument("--serve", action="store_true", help="fuzz `engine serve` over HTTP instead")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    from tests.conftest import e2e_provider_env
    from tests.servers import run_fake, run_gateway

    with contextlib.ExitStack() as stack:
        openai_fake = stack.enter_context(run_fake())
        gemini_fake = stack.enter_context(run_fake("tests.fakes.gemini_fake", "/v1beta", "--key", "gemini-fuzz"))
        env = e2e_provider_env(openai_fake.url, gemini_fake.url, "gemini-fuzz")
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        inprocess = InProcessTarget(tmp / "inprocess", env)
        stack.callback(inprocess.close)
        routes, models = public_routes(inprocess.specs), inprocess.models()
        target: Any = inprocess
        if args.serve:
            gateway = stack.enter_context(run_gateway(tmp / "serve", env))
            target = HTTPTarget(gateway.root, gateway.key)
            stack.callback(target.close)
        swept = run(target.send, sweep(routes, target.key))
        tally = fuzz(target.send, routes, models, target.key, args.examples, seed)
    print(f"type-confusion sweep: {swept.figures()}")
    print(f"seed {seed}; {tally.figures()}")
    for problem in swept.problems() + tally.problems():
        print("  ", problem)
    return 1 if swept.problems() or tally.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
