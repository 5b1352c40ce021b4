"""Every provider spec crossed with every canonical client request → the exact upstream request, pinned.

A new file in specs/providers/ is covered here with no test code: its models appear as new cases and
their snapshots as new files under tests/snapshots/test_lowering_snapshots/. A changed mapping or codec
shows up in review as a diff of those files. Requests a model cannot serve snapshot the 400 the
gateway answers instead, so capability flags are pinned too.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from engine.catalog import Candidate, Catalog, check_capabilities
from engine.errors import GatewayError
from engine.lower import lower_request
from engine.select import select_wire
from engine.spec.loader import load_specs
from engine.validate import validate_chat
from tests.conftest import SPECS, load_corpus

SHIPPED = load_specs(SPECS)
CATALOG = Catalog.from_specs(SHIPPED, env={})  # spec defaults only: no key or base URL from this machine
STRIP = frozenset(SHIPPED.routes.sanitize.strip_fields)
CORPUS = load_corpus()
CANDIDATES = [c for public_id in sorted(CATALOG._all) for c in CATALOG.all_candidates(public_id)]


def lowered(candidate: Candidate, request: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(request)
    body["model"] = candidate.public_id
    original = copy.deepcopy(body)
    try:
        validate_chat(body)
        check_capabilities(body, candidate)
        choice = select_wire(candidate, body, "chat.completions")
        upstream = lower_request(candidate, body, choice, "chat.completions", STRIP)
    except GatewayError as error:
        return {"gateway_answers": error.status, **error.payload()}
    assert body == original, "lowering must not modify the client's request"
    return {
        "wire": choice.wire.name,
        "why": choice.reason,
        "method": upstream.method,
        "url": upstream.url,
        "headers": upstream.redacted_headers(),
        "body": upstream.body,
    }


@pytest.mark.parametrize(
    "candidate", CANDIDATES, ids=[f"{c.provider.id}--{c.public_id.replace('/', '_')}" for c in CANDIDATES]
)
def test_lowered_requests(candidate: Candidate, snapshot_json: Any) -> None:
    assert {name: lowered(candidate, request) for name, request in CORPUS.items()} == snapshot_json


def test_the_corpus_passes_validation() -> None:
    """Canonical requests are valid OpenAI requests; a snapshot of a 400 must come from a capability."""
    for name, request in CORPUS.items():
        validate_chat(request), name


def test_secrets_never_appear_in_lowered_output() -> None:
    catalog = Catalog.from_specs(SHIPPED, env={"OPENAI_API_KEY": "sk-live-SECRET-123456"})
    candidate = catalog.resolve("openai/gpt-4.1")
    upstream = lower_request(
        candidate,
        CORPUS["plain"] | {"model": "openai/gpt-4.1"},
        select_wire(candidate, CORPUS["plain"], "chat.completions"),
        "chat.completions",
    )
    assert upstream.headers["Authorization"] == "Bearer sk-live-SECRET-123456"
    assert "SECRET" not in repr(upstream.redacted_headers())
