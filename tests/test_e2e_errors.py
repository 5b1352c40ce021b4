"""What a client sees when something is wrong: always OpenAI's error shape, the right status, a `param`
where one applies, diagnostic headers once a model is resolved, and never a provider key, an upstream
address or a traceback."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import PROVIDER_KEY, WEATHER_TOOL, content_chunk

CHAT = "/external/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello."}]


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def assert_no_leak(response: httpx.Response, fake_url: str) -> None:
    text = response.text
    assert PROVIDER_KEY not in text and "SECRETKEY" not in text
    assert fake_url not in text and "127.0.0.1" not in text
    assert "Traceback" not in text


# ------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer sk-not-a-gateway-key", "Bearer compose-000000000000_nope"],
    ids=["missing", "wrong-scheme", "empty", "foreign-key", "unknown-key"],
)
def test_requests_without_a_valid_gateway_key_get_401(gateway: Any, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [("GET", "/external/v1/models"), ("POST", CHAT), ("POST", "/external/v1/embeddings")]:
        response = httpx.request(method, gateway.root + path, headers=headers, json={})
        assert response.status_code == 401, (method, path)
        assert error_of(response)["code"] == "invalid_api_key"


def test_a_revoked_key_stops_working(gateway: Any) -> None:
    key = gateway.engine("keys", "create", "--name", "short-lived").stdout.strip().splitlines()[-1]
    assert key.startswith("compose-")
    assert httpx.get(gateway.url + "/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert gateway.engine("keys", "revoke", "short-lived").returncode == 0
    time.sleep(1.1)  # routes.toml: a verified key is trusted for key_cache_seconds (1 s)
    assert httpx.get(gateway.url + "/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_keys_are_stored_hashed(gateway: Any) -> None:
    import sqlite3

    key = gateway.engine("keys", "create", "--name", "hashed").stdout.strip().splitlines()[-1]
    raw = open(gateway.env["ENGINE_DB"], "rb").read()  # noqa: SIM115
    assert key.encode() not in raw and key.split("_", 1)[1].encode() not in raw
    with sqlite3.connect(gateway.env["ENGINE_DB"]) as db:
        assert db.execute("SELECT count(*) FROM keys WHERE name = 'hashed'").fetchone() == (1,)


# ------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO}, "model"),
        ({"model": "openai/gpt-4.1"}, "messages"),
        ({"model": "openai/gpt-4.1", "messages": []}, "messages"),
        ({"model": "openai/gpt-4.1", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": "openai/gpt-4.1", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"model": "openai/gpt-4.1", "messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"model": "openai/gpt-4.1", "messages": HELLO, "stream": "yes"}, "stream"),
        ({"model": 42, "messages": HELLO}, "model"),
    ],
    ids=[
        "no-model",
        "no-messages",
        "empty-messages",
        "bad-role",
        "tool-without-id",
        "temperature-type",
        "stream-type",
        "model-type",
    ],
)
def test_invalid_requests_get_400_naming_the_param(http: httpx.Client, upstream: Any, body: Any, param: str) -> None:
    response = http.post(CHAT, json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert upstream.requests() == [], "nothing invalid may reach the provider"


def test_malformed_json_is_a_400(http: httpx.Client) -> None:
    response = http.post(CHAT, content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "JSON" in error_of(response)["message"]


def test_unknown_model_is_404_model_not_found(http: httpx.Client) -> None:
    response = http.post(CHAT, json={"model": "nobody/nothing", "messages": HELLO})
    assert response.status_code == 404
    assert error_of(response) | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_a_capability_the_model_lacks_is_refused_before_any_upstream_call(http: httpx.Client, upstream: Any) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    response = http.post(CHAT, json={"model": "test/unreachable", "messages": HELLO, "tools": tools})
    assert response.status_code == 400
    assert error_of(response)["param"] == "tools"
    response = http.post(CHAT, json={"model": "openai/gpt-4.1", "messages": HELLO, "reasoning_effort": "high"})
    assert response.status_code == 400 and error_of(response)["param"] == "reasoning_effort"
    assert upstream.requests() == []


def test_unknown_urls_and_methods_are_openai_shaped(http: httpx.Client) -> None:
    response = http.post("/external/v1/nothing-here", json={})
    assert response.status_code == 404 and error_of(response)["code"] == "unknown_url"
    response = http.delete(CHAT)
    assert response.status_code == 405 and error_of(response)["type"] == "invalid_request_error"


# ------------------------------------------------------------------------------- upstream errors


def test_upstream_rate_limit_keeps_status_and_retry_after(http: httpx.Client, upstream: Any, fake: Any) -> None:
    upstream.script(
        {
            "status": 429,
            "headers": {"retry-after": "30", "x-ratelimit-remaining-requests": "0"},
            "json": {
                "error": {
                    "message": "Rate limit reached for gpt-4.1 in organization org-x.",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
        }
    )
    response = http.post(CHAT, json={"model": "openai/gpt-4.1", "messages": HELLO})
    assert response.status_code == 429, "a wait over routes.toml's retry_after_max is the client's to make"
    assert response.headers["retry-after"] == "30"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-compose-upstream-provider"] == "openai"
    assert error_of(response)["code"] == "rate_limit_exceeded"


def test_upstream_server_error_is_passed_on_without_secrets(http: httpx.Client, upstream: Any, fake: Any) -> None:
    overloaded = {
        "status": 503,
        "json": {
            "error": {
                "message": f"Backend at {fake.url} overloaded while using key {PROVIDER_KEY}",
                "type": "server_error",
            }
        },
    }
    upstream.script(overloaded, overloaded)  # tried, and retried once
    response = http.post(CHAT, json={"model": "openai/gpt-4.1", "messages": HELLO})
    assert response.status_code == 503  # the status stays; the text (hosts, keys, traces) does not
    assert error_of(response)["type"] == "api_error" and error_of(response)["code"] == "upstream_server_error"
    assert "overloaded" not in error_of(response)["message"]
    assert_no_leak(response, fake.url)


def test_upstream_rejecting_the_gateway_credentials_is_a_502_not_the_callers_401(
    http: httpx.Client, upstream: Any, fake: Any
) -> None:
    upstream.script(
        {
            "status": 401,
            "json": {
                "error": {
                    "message": "Incorrect API key provided: sk-test-****6789.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        }
    )
    response = http.post(CHAT, json={"model": "openai/gpt-4.1", "messages": HELLO})
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_auth_failed"
    assert "sk-test" not in response.text


def test_content_filter_errors_are_sanitized_but_headers_stay(http: httpx.Client, upstream: Any, fake: Any) -> None:
    upstream.script(
        {
            "status": 400,
            "json": {
                "error": {
                    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                    "management policy. Internal trace id 42 at https://internal.example/path?sig=abc",
                    "type": None,
                    "param": "prompt",
                    "code": "content_filter",
                    "innererror": {"code": "ResponsibleAIPolicyViolation"},
                }
            },
        }
    )
    response = http.post(CHAT, json={"model": "openai/gpt-4.1", "messages": HELLO})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "content_filter" and error["type"] == "invalid_request_error"
    assert "internal" not in error["message"] and "trace" not in error["message"]
    assert response.headers["x-compose-upstream-model"] == "gpt-4.1"


def test_upstream_timeout_is_504(http: httpx.Client, upstream: Any, fake: Any) -> None:
    upstream.script({"delay": 2, "json": {}})
    response = http.post(CHAT, json={"model": "test/slow", "messages": HELLO})
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_first_byte_timeout"
    assert response.headers["x-compose-upstream-provider"] == "slowpoke"
    assert_no_leak(response, fake.url)


def test_unreachable_upstream_is_502(http: httpx.Client, fake: Any) -> None:
    response = http.post(CHAT, json={"model": "test/unreachable", "messages": HELLO})
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_unreachable"
    assert_no_leak(response, fake.url)


def test_upstream_dropping_the_connection_is_502(http: httpx.Client, upstream: Any, fake: Any) -> None:
    upstream.script({"drop": True})
    response = http.post(CHAT, json={"model": "openai/gpt-4.1", "messages": HELLO})
    assert response.status_code == 502
    assert_no_leak(response, fake.url)


def test_an_error_event_mid_stream_reaches_the_client_sanitized(http: httpx.Client, upstream: Any, fake: Any) -> None:
    upstream.script(
        {
            "sse": [
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "gpt-4.1",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}],
                },
                {
                    "error": {
                        "message": f"upstream worker crashed (key {PROVIDER_KEY})",
                        "type": "server_error",
                        "code": None,
                        "param": None,
                    }
                },
            ]
        }
    )
    body = {"model": "openai/gpt-4.1", "messages": HELLO, "stream": True}
    with http.stream("POST", CHAT, json=body) as response:
        raw = response.read().decode()
    events = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    assert '"Hel"' in events[0]
    assert '"upstream_server_error"' in events[-1] and "crashed" not in events[-1]
    assert PROVIDER_KEY not in raw


def test_a_stream_cut_short_ends_with_an_error_event(http: httpx.Client, upstream: Any) -> None:
    upstream.script(
        {
            "sse": [
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "gpt-4.1",
                    "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}],
                },
            ]
        }
    )
    body = {"model": "openai/gpt-4.1", "messages": HELLO, "stream": True}
    with http.stream("POST", CHAT, json=body) as response:
        raw = response.read().decode()
    assert "upstream_stream_interrupted" in raw
    assert "[DONE]" not in raw


def test_a_client_hanging_up_mid_stream_closes_the_upstream_stream(gateway: Any, upstream: Any) -> None:
    chunk = content_chunk("tick ")
    upstream.script({"sse": [chunk] * 200, "event_delay": 0.05})  # ten seconds if nobody hangs up
    before = upstream.aborted()
    body = {"model": "openai/gpt-4.1", "messages": HELLO, "stream": True}
    headers = {"Authorization": f"Bearer {gateway.key}"}
    with httpx.stream("POST", gateway.root + CHAT, json=body, headers=headers, timeout=10) as response:
        first = next(response.iter_lines())
    assert first.startswith("data: ")
    deadline = time.monotonic() + 5
    while upstream.aborted() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.aborted() == before + 1, "the upstream kept streaming to nobody"


# ------------------------------------------------------- streams: the status waits for the first item


def test_an_error_before_any_stream_content_is_a_real_http_error(http: httpx.Client, upstream: Any) -> None:
    """The upstream opened a 200 stream but its first event is an error: nothing went out yet, so the
    client gets that error's status (here 429, from its type), sanitized, with the diagnostic headers. Its
    retry-after is over routes.toml's `retry_after_max`, so the gateway does not wait it out itself."""
    upstream.script(
        {
            "sse": [
                {
                    "error": {
                        "message": f"Rate limit reached for gpt-4.1 (key {PROVIDER_KEY})",
                        "type": "rate_limit_error",
                        "code": "rate_limit_exceeded",
                        "param": None,
                    }
                }
            ],
            "headers": {"retry-after": "30", "x-request-id": "req_upstream_42"},
        }
    )
    body = {"model": "openai/gpt-4.1", "messages": HELLO, "stream": True}
    response = http.post(CHAT, json=body)
    assert response.status_code == 429
    assert response.headers["x-compose-upstream-request-id"] == "req_upstream_42"  # a header, never the body
    assert "req_upstream_42" not in response.text
    error = error_of(response)
    assert error["code"] == "rate_limit_exceeded" and "gpt-4.1" not in error["message"]
    assert response.headers["retry-after"] == "30"
    assert response.headers["x-compose-upstream-provider"] == "openai"
    assert PROVIDER_KEY not in response.text


def test_a_content_filter_error_first_in_a_stream_is_the_400_content_filter(http: httpx.Client, upstream: Any) -> None:
    upstream.script(
        {"sse": [{"error": {"message": "flagged", "type": "invalid_request_error", "code": "content_filter"}}]}
    )
    response = http.post(CHAT, json={"model": "openai/gpt-4.1", "messages": HELLO, "stream": True})
    assert response.status_code == 400
    assert error_of(response)["code"] == "content_filter"
    assert "flagged" not in response.text
    assert response.headers["x-compose-upstream-model"] == "gpt-4.1"


def test_a_stream_that_breaks_before_its_first_item_is_a_502(http: httpx.Client, upstream: Any) -> None:
    upstream.script({"sse": []})  # no [DONE]: the upstream hung up
    response = http.post(CHAT, json={"model": "openai/gpt-4.1", "messages": HELLO, "stream": True})
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_stream_interrupted"


def test_a_200_answer_that_is_a_failure_is_answered_as_the_error_it_carries(http: httpx.Client, upstream: Any) -> None:
    """A codec may return an upstream error from a 200 answer: here a failed Responses object, whose
    `invalid_prompt` becomes the one content-filter error."""
    upstream.script(
        {
            "json": {
                "id": "resp_1",
                "object": "response",
                "status": "failed",
                "error": {"code": "invalid_prompt", "message": "Invalid prompt: flagged (ref 9f2c)."},
                "output": [],
            }
        }
    )
    body = {"model": "openai/gpt-5.5", "messages": HELLO, "tools": [WEATHER_TOOL]}
    response = http.post(CHAT, json=body)
    assert upstream.requests()[-1]["path"].endswith("/responses")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "content_filter" and "9f2c" not in error["message"]
    assert response.headers["x-compose-upstream-provider"] == "openai"
