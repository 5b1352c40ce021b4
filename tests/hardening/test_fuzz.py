"""Fuzzed requests on every public route get an answer in OpenAI's shape, and never a 5xx.

A deterministic sample runs here (tests/hardening/fuzz.py draws the requests and checks the answers): in
process over ASGI, and a smaller one through `engine serve`, both with the real fakes as upstreams. A long
run, on demand: `.venv/bin/python -m tests.hardening.fuzz --examples 5000 [--serve]`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GEMINI_KEY, e2e_provider_env
from tests.hardening.fuzz import HTTPTarget, InProcessTarget, fuzz, public_routes, run, sweep

IN_PROCESS_EXAMPLES = 600
SERVE_EXAMPLES = 150


@pytest.fixture(scope="module")
def inprocess(fake: Any, gemini_fake: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessTarget]:
    target = InProcessTarget(tmp_path_factory.mktemp("fuzz"), e2e_provider_env(fake.url, gemini_fake.url, GEMINI_KEY))
    try:
        yield target
    finally:
        target.close()


def test_fuzzed_requests_in_process(inprocess: InProcessTarget) -> None:
    routes = public_routes(inprocess.specs)
    tally = fuzz(inprocess.send, routes, inprocess.models(), inprocess.key, IN_PROCESS_EXAMPLES, seed=None)
    print(tally.figures())
    assert tally.cases == IN_PROCESS_EXAMPLES
    assert not tally.problems(), "\n".join(tally.problems())
    assert len(tally.statuses) > 3, f"the sample should reach more than a few outcomes: {tally.statuses}"


def test_every_place_of_every_canonical_request_given_another_type(inprocess: InProcessTarget) -> None:
    tally = run(inprocess.send, sweep(public_routes(inprocess.specs), inprocess.key))
    print(tally.figures())
    assert tally.cases > 500
    assert not tally.problems(), "\n".join(tally.problems())


def test_fuzzed_requests_through_engine_serve(gateway: Any, inprocess: InProcessTarget) -> None:
    target = HTTPTarget(gateway.root, gateway.key)
    try:
        tally = fuzz(
            target.send, public_routes(Path(inprocess.specs)), inprocess.models(), gateway.key, SERVE_EXAMPLES, None
        )
    finally:
        target.close()
    print(tally.figures())
    assert tally.cases == SERVE_EXAMPLES
    assert not tally.problems(), "\n".join(tally.problems())
