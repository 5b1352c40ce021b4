"""Which upstream headers an answer passes on (routes.toml `sanitize.forward_headers`, `request_id_headers`),
decided once per header name: the values a client sees are the ones it saw when every name was matched afresh."""

from __future__ import annotations

import httpx

from engine.catalog import Catalog
from engine.sanitize import HeaderForwarding, Sanitizer
from engine.spec.loader import load_specs
from tests.conftest import SPECS

SPECS_LOADED = load_specs(SPECS)
CATALOG = Catalog.from_specs(SPECS_LOADED, env={"OPENAI_API_KEY": "sk-test-0123456789abcdef"})
SANITIZER = Sanitizer.build(CATALOG.providers["openai"], (), SPECS_LOADED.routes.sanitize.redact_patterns)


def forwarding() -> HeaderForwarding:
    return HeaderForwarding(["retry-after", "x-ratelimit-*"], ["x-request-id", "request-id"], "x-upstream-id")


def test_only_the_listed_headers_pass_lower_cased_and_repeats_joined() -> None:
    headers = httpx.Headers(
        [
            ("X-RateLimit-Remaining", "9"),
            ("Server", "upstream/1.0"),
            ("x-ratelimit-remaining", "8"),
            ("Retry-After", "2"),
            ("Set-Cookie", "lb=abc"),
        ]
    )
    passed = forwarding()
    for _ in range(2):  # the second answer is read through the memo
        assert passed(headers, SANITIZER) == {"x-ratelimit-remaining": "9, 8", "retry-after": "2"}


def test_the_first_listed_request_id_source_names_the_upstream_request() -> None:
    headers = httpx.Headers([("request-id", "second"), ("X-Request-Id", "first"), ("x-request-id", "later")])
    assert forwarding()(headers, SANITIZER) == {"x-upstream-id": "first"}
    assert forwarding()(httpx.Headers([("request-id", "")]), SANITIZER) == {}, "an empty id names nothing"


def test_forwarded_values_are_redacted() -> None:
    headers = httpx.Headers([("x-ratelimit-note", "key sk-test-0123456789abcdef is limited")])
    assert "sk-test" not in forwarding()(headers, SANITIZER)["x-ratelimit-note"]


def test_an_upstream_inventing_header_names_cannot_grow_the_memo() -> None:
    passed = forwarding()
    for n in range(3 * HeaderForwarding._MEMO_MAX):
        passed(httpx.Headers([(f"x-made-up-{n}", "1"), ("retry-after", "1")]), SANITIZER)
    assert len(passed._memo) <= HeaderForwarding._MEMO_MAX
