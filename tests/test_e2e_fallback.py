"""Fallback: when a model's preferred provider fails before anything reached the client, and its retries
(one by default, `[retry]`) fail too, the next live provider serving the same public ID answers
(routes.toml `[fallback]`). Here `openai/gpt-5.5` is served by `openai` (priority 10) and, as a fallback,
by `openrouter` (priority 90); both point at the same fake. tests/test_attempts.py covers the policy in
detail, in process; these tests show it over real sockets."""

from __future__ import annotations

from typing import Any

import httpx

CHAT = "/external/v1/chat/completions"
BODY = {"model": "openai/gpt-5.5", "messages": [{"role": "user", "content": "Say hello."}]}


def overloaded(status: int = 503) -> dict[str, Any]:
    return {"status": status, "json": {"error": {"message": "Overloaded", "type": "server_error"}}}


def test_a_5xx_from_the_preferred_provider_falls_back_to_the_next(http: httpx.Client, upstream: Any) -> None:
    upstream.script(overloaded(), overloaded())
    response = http.post(CHAT, json=BODY)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert response.headers["x-compose-upstream-provider"] == "openrouter"
    assert response.headers["x-compose-upstream-model"] == "openai/gpt-5.5"
    assert response.headers["x-compose-fallback-from"] == "openai"
    assert response.headers["x-compose-attempts"] == "3"
    assert [r["body"]["model"] for r in upstream.requests()] == ["gpt-5.5", "gpt-5.5", "openai/gpt-5.5"]


def test_a_streamed_request_falls_back_before_the_first_byte(http: httpx.Client, upstream: Any) -> None:
    upstream.script(overloaded(429), overloaded(429))
    with http.stream("POST", CHAT, json=BODY | {"stream": True}) as response:
        raw = response.read().decode()
    assert response.status_code == 200 and raw.rstrip().endswith("data: [DONE]")
    assert response.headers["x-compose-upstream-provider"] == "openrouter"


def test_client_errors_are_not_retried_elsewhere(http: httpx.Client, upstream: Any) -> None:
    upstream.script(
        {
            "status": 400,
            "json": {
                "error": {"message": "Bad tool schema", "type": "invalid_request_error", "param": "tools", "code": None}
            },
        }
    )
    response = http.post(CHAT, json=BODY)
    assert response.status_code == 400
    assert response.headers["x-compose-upstream-provider"] == "openai"
    assert len(upstream.requests()) == 1


def test_when_every_provider_fails_the_last_error_is_returned(http: httpx.Client, upstream: Any) -> None:
    """openrouter's 429 asks for longer than routes.toml's `retry_after_max`: it is answered as it is."""
    upstream.script(overloaded(503), overloaded(503), {**overloaded(429), "headers": {"retry-after": "30"}})
    response = http.post(CHAT, json=BODY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert response.headers["x-compose-upstream-provider"] == "openrouter"
    assert response.headers["x-compose-fallback-from"] == "openai"


def test_a_model_with_one_provider_has_nothing_to_fall_back_to(http: httpx.Client, upstream: Any) -> None:
    upstream.script(overloaded(), overloaded())
    response = http.post(CHAT, json=BODY | {"model": "openai/gpt-4.1"})
    assert response.status_code == 503
    assert "x-compose-fallback-from" not in response.headers
    assert len(upstream.requests()) == 2, "tried, and retried once"


def test_a_fallback_that_cannot_serve_the_request_is_skipped(http: httpx.Client, upstream: Any) -> None:
    """`understudy` (tests/fixtures) also serves openai/gpt-5.4, but without tools."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    upstream.script(overloaded(), overloaded())
    response = http.post(CHAT, json=BODY | {"model": "openai/gpt-5.4", "tools": tools})
    assert response.status_code == 503, "the preferred provider's answer, not the understudy's 400"
    assert response.headers["x-compose-upstream-provider"] == "openai"
    assert len(upstream.requests()) == 2

    upstream.reset()
    upstream.script(overloaded(), overloaded())
    response = http.post(CHAT, json=BODY | {"model": "openai/gpt-5.4"})
    assert response.status_code == 200
    assert response.headers["x-compose-upstream-provider"] == "understudy"
