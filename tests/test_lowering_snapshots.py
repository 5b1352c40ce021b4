"""Every provider spec crossed with every canonical client request, pinned as the exact upstream request.

A new file in specs/providers/ is covered here with no test code: its models appear as new cases and
their snapshots as new files under tests/snapshots/test_lowering_snapshots/. A changed mapping, rule or
codec shows up in review as a diff of those files.

- Chat requests (tests/requests/chat/) are lowered over every wire the provider's spec can select, one
  file per (model, wire); `selected` says whether the wire rules pick that wire for the request.
- Responses requests (tests/requests/responses/) are lowered as `/responses` would: passed through to
  providers that speak Responses, bridged to chat elsewhere.
Requests a model cannot serve snapshot the error the gateway answers instead, so capability flags and
refusals are pinned too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from engine.catalog import Candidate, Catalog, check_capabilities
from engine.errors import GatewayError
from engine.lower import Context, UpstreamRequest, lower_request
from engine.operations import prepare_responses
from engine.select import WireChoice, select_wire
from engine.spec.loader import load_specs
from engine.validate import validate_chat, validate_responses
from engine.wires import WIRES
from tests.conftest import REQUESTS, SPECS, load_corpus

SHIPPED = load_specs(SPECS)
CATALOG = Catalog.from_specs(SHIPPED, env={})  # spec defaults only: no key or base URL from this machine
STRIP = frozenset(SHIPPED.routes.sanitize.strip_fields)
CHAT_CORPUS = load_corpus(REQUESTS / "chat")
RESPONSES_CORPUS = load_corpus(REQUESTS / "responses")


def in_every_url_form(candidate: Candidate) -> list[Candidate]:
    """The row as its spec has it, plus the same row in each other URL form its provider declares (both of
    Azure's forms are pinned for every model, whichever one a row picks)."""
    forms = candidate.provider.spec.url_forms
    chosen = candidate.row.url_form or candidate.provider.spec.provider.url_form
    others = [
        Candidate.build(candidate.public_id, candidate.provider, candidate.row.model_copy(update={"url_form": form}))
        for form in forms
        if form != chosen
    ]
    return [candidate, *others]


# Chat and /responses requests go to the models that serve them (media models: tests/test_media_snapshots.py).
# One case per provider row (an alias such as `gpt-5.5` for `openai/gpt-5.5` lowers exactly as its row
# does), and per URL form for providers that have several.
CANDIDATES = [
    form
    for public_id in sorted(CATALOG.public_ids())
    for c in CATALOG.all_candidates(public_id)
    if public_id in c.provider.spec.models and "chat.completions" in c.serves
    for form in in_every_url_form(c)
]


def reachable_wires(candidate: Candidate) -> list[str]:
    spec = candidate.provider.spec
    wires = {spec.provider.wire, *(rule.wire for rule in spec.wire_rules)}
    return sorted(w for w in wires if candidate.urls is None or WIRES[w].shape in candidate.urls)


CHAT_CASES = [(c, wire) for c in CANDIDATES for wire in reachable_wires(c)]


def case_id(candidate: Candidate) -> str:
    form = candidate.row.url_form or candidate.provider.spec.provider.url_form
    suffix = f"--{form}" if len(candidate.provider.spec.url_forms) > 1 else ""
    return f"{candidate.provider.id}--{candidate.public_id.replace('/', '_')}{suffix}"


def shown(upstream: UpstreamRequest) -> dict[str, Any]:
    return {
        "method": upstream.method,
        "url": upstream.url,
        "headers": upstream.redacted_headers(),
        "body": upstream.body,
    }


def guarded(request: dict[str, Any], lower: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Lower a copy; a refusal becomes the error the client would get. Asserts the request is not mutated."""
    original = copy.deepcopy(request)
    try:
        result = lower(request)
    except GatewayError as error:
        result = {"gateway_answers": error.status, **error.payload()}
    assert request == original, "lowering must not modify the client's request"
    return result


def lowered_chat(candidate: Candidate, wire: str, request: dict[str, Any]) -> dict[str, Any]:
    def lower(body: dict[str, Any]) -> dict[str, Any]:
        validate_chat(body)
        check_capabilities(body, candidate)
        selected = select_wire(candidate, body, "chat.completions", "chat")
        forced = WireChoice(WIRES[wire], "forced by the snapshot test")
        upstream = lower_request(candidate, body, forced, "chat.completions", STRIP)
        return {"selected": selected.wire.name == wire, **shown(upstream)}

    return guarded({**request, "model": candidate.public_id}, lower)


def lowered_responses(candidate: Candidate, request: dict[str, Any]) -> dict[str, Any]:
    def lower(body: dict[str, Any]) -> dict[str, Any]:
        validate_responses(body)
        upstream, _ = prepare_responses(body, candidate, Context(STRIP))
        return {"wire": upstream.choice.wire.name, "why": upstream.choice.reason, **shown(upstream)}

    return guarded({**request, "model": candidate.public_id}, lower)


@pytest.mark.parametrize(("candidate", "wire"), CHAT_CASES, ids=[f"{case_id(c)}--{w}" for c, w in CHAT_CASES])
def test_chat_requests_lowered(candidate: Candidate, wire: str, snapshot_json: Any) -> None:
    assert {name: lowered_chat(candidate, wire, r) for name, r in CHAT_CORPUS.items()} == snapshot_json


@pytest.mark.parametrize("candidate", CANDIDATES, ids=[case_id(c) for c in CANDIDATES])
def test_responses_requests_lowered(candidate: Candidate, snapshot_json: Any) -> None:
    assert {name: lowered_responses(candidate, r) for name, r in RESPONSES_CORPUS.items()} == snapshot_json


def test_the_chat_corpus_is_valid_openai() -> None:
    """Canonical requests are valid; a snapshot of a 400 must come from the model or the wire, not the corpus."""
    for request in CHAT_CORPUS.values():
        validate_chat(request)
    for request in RESPONSES_CORPUS.values():
        validate_responses(request)


def test_secrets_never_appear_in_lowered_output() -> None:
    catalog = Catalog.from_specs(SHIPPED, env={"OPENAI_API_KEY": "sk-live-SECRET-123456"})
    candidate = catalog.resolve("openai/gpt-4.1")
    request = CHAT_CORPUS["plain"] | {"model": "openai/gpt-4.1"}
    upstream = lower_request(
        candidate, request, select_wire(candidate, request, "chat.completions", "chat"), "chat.completions"
    )
    assert upstream.headers["Authorization"] == "Bearer sk-live-SECRET-123456"
    assert "SECRET" not in repr(upstream.redacted_headers())
