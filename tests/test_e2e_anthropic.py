"""Claude end to end: the official OpenAI SDK → `engine serve` → the Anthropic Messages fake.

The fake enforces Anthropic's thinking rule: in a tool loop with thinking on, the assistant turn that made
the calls must come back starting with its thinking block, signature intact. OpenAI clients cannot carry
that block, so these tests pass only if the gateway keeps it (stored, keyed by tool-call id and gateway
key) and restores it on the next turn, on /chat/completions and /responses, streaming and not. The loops
are run by the official OpenAI SDK and by the Vercel AI SDK (tests/clients/vercel_ai_sdk/tool_loop.mjs),
which runs the tools and the next turns itself.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import WEATHER_TOOL
from tests.fakes import anthropic_fake
from tests.test_e2e_gemini import run_vercel_loop
from tests.test_e2e_ledger import ledger_rows

MODEL = "anthropic/claude-sonnet-4.6"
ASK = [{"role": "user", "content": "Weather in Oslo?"}]
RESULT = '{"temp_c": 4}'
RESPONSES_TOOL = {"type": "function", **WEATHER_TOOL["function"]}


def messages_sent(upstream: Any) -> list[dict[str, Any]]:
    return [r["body"] for r in upstream.requests() if r["path"] == "/v1/messages"]


def chat_turn_one(client: openai.OpenAI, stream: bool) -> dict[str, Any]:
    """The first turn, as the assistant message a client appends to its history."""
    request: dict[str, Any] = {"model": MODEL, "messages": ASK, "tools": [WEATHER_TOOL], "reasoning_effort": "medium"}
    if not stream:
        message = client.chat.completions.create(**request).choices[0].message
        return message.model_dump(exclude_none=True)
    calls: dict[int, dict[str, Any]] = {}
    reasoning = ""
    for chunk in client.chat.completions.create(**request, stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is None:
            continue
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for fragment in delta.tool_calls or ():
            call = calls.setdefault(fragment.index, {"type": "function", "function": {"arguments": ""}})
            if fragment.id:
                call["id"] = fragment.id
            if fragment.function and fragment.function.name:
                call["function"]["name"] = fragment.function.name
            if fragment.function and fragment.function.arguments:
                call["function"]["arguments"] += fragment.function.arguments
    return {"role": "assistant", "tool_calls": list(calls.values()), "reasoning_content": reasoning}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_chat_tool_loop_keeps_thinking_across_turns(client: openai.OpenAI, upstream: Any, stream: bool) -> None:
    assistant = chat_turn_one(client, stream)
    assert assistant["reasoning_content"] == anthropic_fake.THOUGHT
    (call,) = assistant["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert call["id"].startswith("cr1-anthropic-s") and len(call["id"]) < 80, "stored by reference, not inline"

    history = [*ASK, assistant, {"role": "tool", "tool_call_id": call["id"], "content": RESULT}]
    second = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER_TOOL], reasoning_effort="medium", stream=False
    )
    assert second.choices[0].message.content == f"The tool said: {RESULT}"

    sent = messages_sent(upstream)[-1]
    thinking, tool_use = sent["messages"][1]["content"]
    assert thinking == {
        "type": "thinking",
        "thinking": anthropic_fake.THOUGHT,
        "signature": anthropic_fake.sign(anthropic_fake.THOUGHT),
    }
    assert tool_use["id"] == "toolu_fake_0" and sent["messages"][2]["content"][0]["tool_use_id"] == "toolu_fake_0"
    assert "cr1-" not in json.dumps(sent), "a packed id never reaches the provider"
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}


def test_a_client_that_drops_reasoning_content_gets_the_same_answer(client: openai.OpenAI, upstream: Any) -> None:
    assistant = chat_turn_one(client, stream=False)
    assistant.pop("reasoning_content")
    call = assistant["tool_calls"][0]
    history = [*ASK, assistant, {"role": "tool", "tool_call_id": call["id"], "content": RESULT}]
    second = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER_TOOL], reasoning_effort="low")
    assert second.choices[0].message.content == f"The tool said: {RESULT}"
    assert messages_sent(upstream)[-1]["messages"][1]["content"][0]["type"] == "thinking"


def test_another_gateway_key_cannot_read_the_stored_thinking(
    client: openai.OpenAI, gateway: Any, upstream: Any
) -> None:
    """The stored block is scoped to the key that earned it. Another key's next turn still works, with
    thinking off for that turn (what Anthropic accepts without the block), instead of a 400."""
    assistant = chat_turn_one(client, stream=False)
    created = gateway.engine("keys", "create", "--name", "mallory")
    other = openai.OpenAI(base_url=gateway.url, api_key=created.stdout.strip().splitlines()[-1], max_retries=0)
    call = assistant["tool_calls"][0]
    history = [*ASK, assistant, {"role": "tool", "tool_call_id": call["id"], "content": RESULT}]
    second = other.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER_TOOL], reasoning_effort="low")
    assert second.choices[0].message.content == f"The tool said: {RESULT}"
    sent = messages_sent(upstream)[-1]
    assert "thinking" not in sent and sent["messages"][1]["content"][0]["type"] == "tool_use"


def responses_turn_one(client: openai.OpenAI, stream: bool) -> list[dict[str, Any]]:
    request: dict[str, Any] = {
        "model": MODEL,
        "input": "Weather in Oslo?",
        "tools": [RESPONSES_TOOL],
        "reasoning": {"effort": "medium"},
    }
    if not stream:
        return [item.model_dump(exclude_none=True) for item in client.responses.create(**request).output]
    done = [e for e in client.responses.create(**request, stream=True) if e.type == "response.completed"]
    return [item.model_dump(exclude_none=True) for item in done[0].response.output]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_responses_tool_loop_keeps_thinking_across_turns(client: openai.OpenAI, upstream: Any, stream: bool) -> None:
    output = responses_turn_one(client, stream)
    assert [item["type"] for item in output] == ["reasoning", "function_call"]
    call = output[1]
    items = [
        {"role": "user", "content": "Weather in Oslo?"},
        *output,
        {"type": "function_call_output", "call_id": call["call_id"], "output": RESULT},
    ]
    second = client.responses.create(model=MODEL, input=items, tools=[RESPONSES_TOOL], reasoning={"effort": "medium"})
    assert second.output_text == f"The tool said: {RESULT}"
    assert messages_sent(upstream)[-1]["messages"][1]["content"][0]["type"] == "thinking"


def assert_every_tool_turn_went_back_with_its_thinking(upstream: Any) -> None:
    """Each request that answers tool calls sends the assistant turn that made them starting with the signed
    thinking block the fake issued, with thinking still on; no packed id reaches Anthropic."""
    answering = [b for b in messages_sent(upstream) if b["messages"][-1]["content"][0]["type"] == "tool_result"]
    assert answering, "the loop answered tool calls"
    for body in answering:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
        assert body["messages"][-2]["content"][0] == {
            "type": "thinking",
            "thinking": anthropic_fake.THOUGHT,
            "signature": anthropic_fake.sign(anthropic_fake.THOUGHT),
        }
        assert "cr1-" not in json.dumps(body)


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_vercel_ai_sdk_tool_loop_keeps_thinking_across_turns(gateway: Any, upstream: Any, mode: str, api: str) -> None:
    """Two user turns of two steps each (call the tool, answer from its result), thinking at effort medium.
    The SDK does not give the signed block back: on chat it echoes only the thinking text as
    `reasoning_content` (unsigned, so never sent as thinking); on /responses with store false it drops the
    reasoning item outright (it has no `encrypted_content`). Only the tool-call id carries the block."""
    seen = run_vercel_loop(gateway, MODEL, mode, api, effort="medium")
    assert seen["turns"] == [{"text": 'The tool said: {"city":"Oslo","temp_c":4}', "steps": 2, "errors": []}] * 2
    assert seen["executed"] == ["Oslo", "Oslo"]
    (first_call,) = seen["toolCallIds"]  # the first turn's, as the SDK kept it in its history
    assert first_call.startswith("cr1-anthropic-s") and len(first_call) < 80, "stored by reference, not inline"
    steps = [step for turn in seen["steps"] for step in turn]
    assert [step["reasoning"] for step in steps] == [anthropic_fake.THOUGHT] * 4, "every step thought"
    replayed = steps[-1]["sent"]
    if api == "chat":
        made_calls = [m for m in replayed["messages"] if m.get("tool_calls")]
        assert [m["reasoning_content"] for m in made_calls] == [anthropic_fake.THOUGHT] * 2
    else:
        assert not [item for item in replayed["input"] if item.get("type") == "reasoning"]
    assert len(messages_sent(upstream)) == 4
    assert_every_tool_turn_went_back_with_its_thinking(upstream)


def test_prompt_cache_reads_and_writes_are_reported_priced_and_recorded(
    client: openai.OpenAI, gateway: Any, upstream: Any
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    completion = raw.parse()
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (32, 9)  # 20 uncached + 8 read + 4 written
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 8
    assert usage.prompt_tokens_details.model_dump()["cache_write_tokens"] == 4
    sent = upstream.requests()[-1]
    assert sent["headers"]["x-api-key"] == "sk-ant-test-000000000000"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["body"]["max_tokens"] == 64000, "from the catalog row when the client sends none"

    request_id = raw.headers["x-request-id"]
    row = ledger_rows(gateway.env, [request_id])[request_id]
    assert (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens) == (32, 8, 4)
    # claude-sonnet-4.6: input 3.00, cache reads 0.30, cache writes 3.75, output 15.00 USD per million
    assert row.cost_usd == pytest.approx((20 * 3.00 + 8 * 0.30 + 4 * 3.75 + 9 * 15.00) / 1e6)


OVERLOADED = anthropic_fake.error("overloaded_error", "Overloaded")


def test_overloaded_falls_back_to_the_next_provider(http: Any, upstream: Any) -> None:
    overloaded = {"status": 529, "json": OVERLOADED}
    upstream.script(overloaded, overloaded)  # the first try and its one retry (routes.toml [retry] default)
    response = http.post("/external/v1/chat/completions", json={"model": MODEL, "messages": ASK})
    assert response.status_code == 200, response.text
    assert response.headers["x-compose-upstream-provider"] == "openrouter"
    assert response.headers["x-compose-fallback-from"] == "anthropic"


def test_an_overloaded_event_before_any_content_is_a_real_error_status(http: Any, upstream: Any) -> None:
    start = {"type": "message_start", "message": {"id": "msg_x", "model": "claude-sonnet-4-6", "usage": {}}}
    overloaded = [f"event: message_start\ndata: {json.dumps(start)}", f"event: error\ndata: {json.dumps(OVERLOADED)}"]
    upstream.script({"sse": overloaded}, {"sse": overloaded})  # the first try and its retry
    body = {"model": "anthropic/claude-haiku-4.5", "messages": ASK, "stream": True}  # Anthropic only: no fallback
    response = http.post("/external/v1/chat/completions", json=body)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "upstream_overloaded"


def test_an_anthropic_error_body_is_answered_in_openai_shape(http: Any, upstream: Any) -> None:
    upstream.script({"status": 400, "json": anthropic_fake.error("invalid_request_error", "prompt is too long")})
    response = http.post("/external/v1/chat/completions", json={"model": MODEL, "messages": ASK})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "prompt is too long",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
