"""Chat completions end to end: the official OpenAI SDK → `engine serve` → the local OpenAI-wire fake.

These tests run the real server process, so they cover what a user gets: routing, auth, the lowered
request as the upstream receives it, streaming relay, usage forcing, and diagnostic headers.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import PROVIDER_KEY, WEATHER_TOOL

HELLO = [{"role": "user", "content": "Say hello."}]


def test_models_lists_only_models_whose_provider_has_a_key(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    # Keys set for openai, groq, openrouter and the test providers; unset for deepseek, mistral, xai.
    assert {"openai/gpt-4.1", "openai/gpt-5.5", "meta-llama/llama-3.3-70b", "moonshotai/kimi-k2.6", "test/slow"} <= ids
    assert "x-ai/grok-4.3" in ids, "served by openrouter too"
    assert not {"x-ai/grok-4.20-reasoning", "deepseek/deepseek-v4-pro", "mistralai/codestral"} & ids


def test_a_model_id_with_a_slash_can_be_retrieved(client: openai.OpenAI) -> None:
    model = client.models.retrieve("openai/gpt-5.5")
    assert model.id == "openai/gpt-5.5"
    assert model.object == "model"
    assert model.owned_by == "openai"


def test_retrieving_an_unknown_model_is_a_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nobody/nothing")
    assert caught.value.code == "model_not_found"


def test_plain_chat_completion(client: openai.OpenAI, upstream: Any) -> None:
    completion = client.chat.completions.create(model="openai/gpt-4.1", messages=HELLO)
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert completion.usage is not None and completion.usage.total_tokens == 19
    sent = upstream.requests()[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"] == {"model": "gpt-4.1", "messages": HELLO}
    assert sent["headers"]["Authorization"] == f"Bearer {PROVIDER_KEY}"


def test_diagnostic_headers_name_public_and_upstream_model(http: Any, upstream: Any) -> None:
    response = http.post("/external/v1/chat/completions", json={"model": "openai/gpt-4.1", "messages": HELLO})
    assert response.status_code == 200
    assert response.headers["x-compose-public-model"] == "openai/gpt-4.1"
    assert response.headers["x-compose-upstream-provider"] == "openai"
    assert response.headers["x-compose-upstream-model"] == "gpt-4.1"
    assert float(response.headers["x-compose-overhead-ms"]) >= 0


def test_streaming_relays_chunks_and_hides_the_forced_usage_chunk(client: openai.OpenAI, upstream: Any) -> None:
    chunks = list(client.chat.completions.create(model="openai/gpt-4.1", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    assert all(c.usage is None for c in chunks), "the client did not ask for usage"
    assert upstream.last_body()["stream_options"] == {"include_usage": True}, "metering needs usage upstream"


def test_streaming_delivers_usage_when_the_client_asks(client: openai.OpenAI, upstream: Any) -> None:
    chunks = list(
        client.chat.completions.create(
            model="openai/gpt-4.1", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 19


def test_stream_carries_diagnostic_headers_and_ends_with_done(http: Any, upstream: Any) -> None:
    body = {"model": "openai/gpt-4.1", "messages": HELLO, "stream": True}
    with http.stream("POST", "/external/v1/chat/completions", json=body) as response:
        raw = response.read().decode()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-compose-upstream-model"] == "gpt-4.1"
    assert raw.rstrip().endswith("data: [DONE]")


def test_tool_call_round_trip(client: openai.OpenAI, upstream: Any) -> None:
    first = client.chat.completions.create(
        model="openai/gpt-4.1", messages=HELLO, tools=[WEATHER_TOOL], tool_choice="auto", parallel_tool_calls=True
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    sent = upstream.last_body()
    assert sent["tools"] == [WEATHER_TOOL] and sent["tool_choice"] == "auto" and sent["parallel_tool_calls"]

    history = [
        *HELLO,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 4}'},
    ]
    second = client.chat.completions.create(model="openai/gpt-4.1", messages=history, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == 'The tool said: {"temp_c": 4}'
    assert upstream.last_body()["messages"][-1] == history[-1]


def test_streamed_tool_call_starts_with_id_and_name(client: openai.OpenAI, upstream: Any) -> None:
    chunks = list(
        client.chat.completions.create(model="openai/gpt-4.1", messages=HELLO, tools=[WEATHER_TOOL], stream=True)
    )
    fragments = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert fragments[0].id == "call_fake_1" and fragments[0].function.name == "get_weather"
    assert "".join(f.function.arguments or "" for f in fragments) == '{"city":"Oslo"}'


def test_reasoning_model_gets_max_completion_tokens_and_no_sampling(client: openai.OpenAI, upstream: Any) -> None:
    client.chat.completions.create(model="openai/gpt-5.5", messages=HELLO, max_tokens=300, temperature=0.3)
    sent = upstream.last_body()
    assert sent["max_completion_tokens"] == 300
    assert "max_tokens" not in sent and "temperature" not in sent


def test_unknown_but_valid_fields_pass_through_and_receipts_are_stripped(http: Any, upstream: Any) -> None:
    body = {
        "model": "openai/gpt-4.1",
        "messages": HELLO,
        "prompt_cache_key": "k1",
        "a_future_field": {"x": 1},
        "compose_receipt": {"id": "r1"},
    }
    upstream.script(
        {
            "json": {
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4.1",
                "choices": [],
                "compose_receipt": {"cost": 1},
            }
        }
    )
    response = http.post("/external/v1/chat/completions", json=body)
    sent = upstream.last_body()
    assert sent["prompt_cache_key"] == "k1" and sent["a_future_field"] == {"x": 1}
    assert "compose_receipt" not in sent
    assert "compose_receipt" not in response.json()


def test_usage_is_metered_per_key_with_cost(gateway: Any, upstream: Any) -> None:
    import time

    key = gateway.engine("keys", "create", "--name", "metered").stdout.strip().splitlines()[-1]
    client = openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)
    client.chat.completions.create(model="openai/gpt-4.1", messages=HELLO)
    list(client.chat.completions.create(model="openai/gpt-4.1", messages=HELLO, stream=True))
    deadline = time.monotonic() + 10
    row = ""
    while time.monotonic() < deadline:
        row = next(line for line in gateway.engine("keys", "list").stdout.splitlines() if line.startswith("metered"))
        if row.split()[-3] == "2":
            break
        time.sleep(0.1)
    requests, tokens, cost = row.split()[-3:]
    assert (requests, tokens) == ("2", "38"), row  # 2 x (12 prompt + 7 completion), the stream's usage included
    assert float(cost) == pytest.approx(2 * (12 * 2.00 + 7 * 8.00) / 1e6, abs=1e-6)


def test_upstream_rate_limit_headers_reach_the_client_on_success(http: Any, upstream: Any) -> None:
    upstream.script(
        {
            "json": {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4.1", "choices": []},
            "headers": {"x-ratelimit-remaining-tokens": "9000", "openai-organization": "org-secret"},
        }
    )
    response = http.post("/external/v1/chat/completions", json={"model": "openai/gpt-4.1", "messages": HELLO})
    assert response.headers["x-ratelimit-remaining-tokens"] == "9000"
    assert "openai-organization" not in response.headers, "only routes.toml's forward_headers pass"
