"""The attempt policy (engine/attempts.py), in process: the gateway app over a scripted MockTransport on a
virtual clock, so every backoff and retry-after is measured exactly and no test sleeps.

Shipped specs: `openai/gpt-5.5` is served by `openai` (priority 10) then `openrouter` (priority 90);
`openai/gpt-4.1` by `openai` alone. Each provider retries once by default (`[retry] max_retries = 1`,
backoff 0.25 s at most before the first retry), and routes.toml tries two providers per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inprocess import InProcess, chunk, fail, gaps, refuse, sse, status

CHAT = "/external/v1/chat/completions"
BODY = {"model": "openai/gpt-5.5", "messages": [{"role": "user", "content": "Say hello."}]}
ONE_PROVIDER = BODY | {"model": "openai/gpt-4.1"}


def with_retries(tmp_path: Path, provider: str, table: str, routes: str = "") -> InProcess:
    """The gateway with a `[retry]` table added to one provider's spec (and a routes.toml edit)."""

    def add_retry(text: str) -> str:
        return text.replace("\n[auth]", f"\n[retry]\n{table}\n\n[auth]", 1)

    edits: dict[str, Any] = {f"providers/{provider}.toml": add_retry}
    if routes:
        old, new = routes.split(" -> ")
        edits["routes.toml"] = lambda text: text.replace(old, new)
    return InProcess(tmp_path, edits)


# ------------------------------------------------------------------------------------ retry, then next


def test_a_5xx_is_retried_on_the_same_provider_after_a_jittered_backoff(gw: InProcess) -> None:
    gw.upstreams.script("openai", status(503))
    response = gw.post(CHAT, json=BODY)
    assert response.status_code == 200
    assert response.headers["x-compose-upstream-provider"] == "openai"
    assert response.headers["x-compose-attempts"] == "2"
    assert "x-compose-fallback-from" not in response.headers
    [wait] = gaps(gw.upstreams.times())
    assert 0.125 <= wait <= 0.25, "the first backoff is between half and all of backoff_initial"


def test_when_its_retries_are_used_up_the_next_provider_answers(gw: InProcess) -> None:
    gw.upstreams.script("openai", status(503), status(502))
    response = gw.post(CHAT, json=BODY)
    assert response.status_code == 200
    assert gw.upstreams.order() == ["openai", "openai", "openrouter"]
    assert response.headers["x-compose-upstream-provider"] == "openrouter"
    assert response.headers["x-compose-fallback-from"] == "openai"
    assert response.headers["x-compose-attempts"] == "3"
    assert gaps(gw.upstreams.times())[1] == 0, "moving on to another provider does not back off"


def test_backoff_doubles_up_to_its_maximum(tmp_path: Path) -> None:
    table = "max_retries = 4\nbackoff_initial = 0.1\nbackoff_max = 0.3"
    with with_retries(tmp_path, "openai", table) as gw:
        gw.upstreams.script("openai", *[status(500)] * 4)
        response = gw.post(CHAT, json=ONE_PROVIDER)
        assert response.status_code == 200 and response.headers["x-compose-attempts"] == "5"
        waits = gaps(gw.upstreams.times())
    for wait, ceiling in zip(waits, [0.1, 0.2, 0.3, 0.3], strict=True):
        assert ceiling / 2 <= wait <= ceiling, waits


def test_when_every_provider_fails_the_last_error_is_the_answer(gw: InProcess) -> None:
    gw.upstreams.script("openai", status(503), status(503))
    gw.upstreams.script("openrouter", status(500), status(502))
    response = gw.post(CHAT, json=BODY)
    assert response.status_code == 502  # the last one's status (its text is replaced: routes.toml's 5xx rule)
    assert response.json()["error"]["code"] == "upstream_server_error"
    assert response.headers["x-compose-upstream-provider"] == "openrouter"
    assert response.headers["x-compose-fallback-from"] == "openai", "only the providers that failed first"
    assert response.headers["x-compose-attempts"] == "4"


@pytest.mark.parametrize("code", [408, 409, 429])
def test_the_retryable_4xx_are_retried(gw: InProcess, code: int) -> None:
    gw.upstreams.script("openai", status(code))
    assert gw.post(CHAT, json=ONE_PROVIDER).status_code == 200
    assert gw.upstreams.hits("openai") == 2


@pytest.mark.parametrize("code", [400, 401, 403, 404, 413, 422])
def test_other_4xx_are_the_requests_fault_and_never_retried_or_moved_on_from(gw: InProcess, code: int) -> None:
    gw.upstreams.script("openai", status(code))
    response = gw.post(CHAT, json=BODY)
    assert response.status_code in (code, 502)  # 401/403: the gateway's credentials, an upstream fault (502)
    assert gw.upstreams.order() == ["openai"]
    assert response.headers["x-compose-attempts"] == "1"


def test_a_quota_error_moves_on_without_retrying_the_same_provider(gw: InProcess) -> None:
    gw.upstreams.script("openai", status(429, "insufficient_quota"))
    response = gw.post(CHAT, json=BODY)
    assert response.status_code == 200
    assert gw.upstreams.order() == ["openai", "openrouter"]
    assert gaps(gw.upstreams.times()) == [0]


# ------------------------------------------------------------------------------------------ retry-after


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "800"}, 0.8),
        ({"retry-after-ms": "300", "retry-after": "1"}, 0.3),  # the precise header wins
        ({"retry-after": "soon"}, None),  # unreadable: ordinary backoff
    ],
)
def test_a_429_waits_what_the_upstream_asks(gw: InProcess, headers: dict[str, str], wait: float | None) -> None:
    gw.upstreams.script("openai", status(429, "rate_limit_exceeded", headers))
    assert gw.post(CHAT, json=ONE_PROVIDER).status_code == 200
    [waited] = gaps(gw.upstreams.times())
    if wait is None:
        assert 0.125 <= waited <= 0.25
    else:
        assert waited == pytest.approx(wait)


def test_a_retry_after_over_the_cap_moves_on_at_once(gw: InProcess) -> None:
    gw.upstreams.script("openai", status(429, "rate_limit_exceeded", {"retry-after": "60"}))
    response, took = gw.timed_post(CHAT, json=BODY)
    assert response.status_code == 200 and gw.upstreams.order() == ["openai", "openrouter"]
    assert took < 0.01


def test_with_nothing_left_to_try_a_long_retry_after_is_passed_to_the_client(gw: InProcess) -> None:
    gw.upstreams.script("openai", status(429, "rate_limit_exceeded", {"retry-after": "60"}))
    response = gw.post(CHAT, json=ONE_PROVIDER)
    assert response.status_code == 429 and response.headers["retry-after"] == "60"
    assert gw.upstreams.hits() == 1


# ------------------------------------------------------------------------------- transport failures


@pytest.mark.parametrize("step", [refuse(), fail(httpx.ConnectTimeout), fail(httpx.PoolTimeout)])
def test_failures_before_the_request_was_sent_are_retried(gw: InProcess, step: Any) -> None:
    gw.upstreams.script("openai", step)
    assert gw.post(CHAT, json=ONE_PROVIDER).status_code == 200
    assert gw.upstreams.hits("openai") == 2


@pytest.mark.parametrize(
    ("step", "status_code", "code"),
    [
        (fail(httpx.ReadTimeout), 504, "upstream_first_byte_timeout"),
        (fail(httpx.RemoteProtocolError), 502, "upstream_unreachable"),
    ],
)
def test_failures_after_sending_are_not_retried_by_default(
    gw: InProcess, step: Any, status_code: int, code: str
) -> None:
    gw.upstreams.script("openai", step)
    response = gw.post(CHAT, json=BODY)
    assert response.status_code == status_code and response.json()["error"]["code"] == code
    assert gw.upstreams.order() == ["openai"], "the provider may have done (and billed) the work"


def test_where_routes_toml_says_it_is_safe_a_timeout_after_sending_moves_on(tmp_path: Path) -> None:
    edit = "on_timeout = false -> on_timeout = true"
    with with_retries(tmp_path, "openai", "max_retries = 3", routes=edit) as gw:
        gw.upstreams.script("openai", fail(httpx.ReadTimeout))
        response = gw.post(CHAT, json=BODY)
        assert response.status_code == 200
        assert gw.upstreams.order() == ["openai", "openrouter"], "moved on, never retried on the same provider"


# --------------------------------------------------------------------------------- after the first byte


def test_nothing_is_retried_once_a_stream_has_started(gw: InProcess) -> None:
    gw.upstreams.script("openai", sse([chunk("Hel")], cut=True))
    response = gw.post(CHAT, json=BODY | {"stream": True})
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert '"Hel"' in events[0]
    assert "upstream_stream_interrupted" in events[-1] and events.count(events[-1]) == 1
    assert "[DONE]" not in response.text
    assert gw.upstreams.order() == ["openai"]


def test_a_stream_that_fails_before_its_first_byte_falls_back(gw: InProcess) -> None:
    gw.upstreams.script("openai", status(503), status(503))
    response = gw.post(CHAT, json=BODY | {"stream": True})
    assert response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")
    assert response.headers["x-compose-upstream-provider"] == "openrouter"


def test_an_error_reported_as_a_streams_first_item_is_retried_like_its_status(gw: InProcess) -> None:
    """Nothing went to the client yet: a rate limit inside a 200 stream is a 429 like any other."""
    limited = {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}
    gw.upstreams.script("openai", sse([limited]))
    response = gw.post(CHAT, json=ONE_PROVIDER | {"stream": True})
    assert response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")
    assert gw.upstreams.hits("openai") == 2


# ---------------------------------------------------------------------------------------- candidates


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def test_a_fallback_that_cannot_serve_the_request_is_skipped(gw: InProcess) -> None:
    """`openai/gpt-5.4`: openai, then `understudy` (tests/fixtures), which has no tools."""
    gw.upstreams.script("openai", status(503), status(503))
    response = gw.post(CHAT, json=BODY | {"model": "openai/gpt-5.4", "tools": TOOLS})
    assert response.status_code == 503, "the preferred provider's answer, not the understudy's 400"
    assert gw.upstreams.order() == ["openai", "openai"]


def test_a_skipped_candidate_does_not_use_up_an_attempt(tmp_path: Path) -> None:
    """Three homes for one model, two providers per request: the middle one cannot serve, the third does."""
    understudy_tools = ("providers/understudy.toml", lambda t: t.replace("tools = false", "tools = true"))
    no_tools_at_openrouter = (
        "providers/openrouter.toml",
        lambda t: t + '\n[models."openai/gpt-5.4"]\nupstream = "openai/gpt-5.4"\ntools = false\n',
    )
    with InProcess(tmp_path, dict([understudy_tools, no_tools_at_openrouter])) as gw:
        gw.upstreams.script("openai", status(503), status(503))
        response = gw.post(CHAT, json=BODY | {"model": "openai/gpt-5.4", "tools": TOOLS})
        assert response.status_code == 200
        assert gw.upstreams.order() == ["openai", "openai", "understudy"]
        assert response.headers["x-compose-attempts"] == "3"


# ------------------------------------------------------------------------------------------- the spec


def test_routes_toml_cannot_make_the_requests_own_4xx_retryable() -> None:
    from pydantic import ValidationError

    from engine.spec.models import Fallback

    with pytest.raises(ValidationError, match="the request's fault"):
        Fallback(on_status=[429, 400])


def test_retry_after_as_an_http_date() -> None:
    import email.utils
    import time

    from engine.attempts import Policy
    from engine.spec.models import Fallback

    policy = Policy(Fallback())
    in_five = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3 <= (policy.retry_after({"retry-after": in_five}) or 0) <= 5
    assert policy.retry_after({"retry-after": "-1"}) is None
    assert policy.retry_after({"retry-after-ms": "nan"}) is None
