"""The Responses wire end to end.

1. Chat clients of OpenAI reasoning models with function tools are served over /responses, because
   /chat/completions refuses them (the fake upstream refuses them too), and get ordinary chat answers.
2. `POST /responses` works for every model: passed through to OpenAI, bridged over chat to others.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai

from tests.conftest import WEATHER_TOOL

ASK = [{"role": "user", "content": "Weather in Oslo?"}]


def paths(upstream: Any) -> list[str]:
    return [r["path"] for r in upstream.requests()]


# ------------------------------------------------------------- chat clients, Responses wire underneath


def test_tools_on_a_model_that_reasons_by_default_go_over_responses(client: openai.OpenAI, upstream: Any) -> None:
    first = client.chat.completions.create(model="openai/gpt-5.5", messages=ASK, tools=[WEATHER_TOOL], max_tokens=500)
    assert paths(upstream) == ["/v1/responses"]
    sent = upstream.last_body()
    assert sent["tools"][0] == {
        "type": "function",
        "name": "get_weather",
        "strict": False,
        "description": "Current weather for a city",
        "parameters": WEATHER_TOOL["function"]["parameters"],
    }
    assert sent["max_output_tokens"] == 500 and sent["store"] is False
    assert sent["include"] == ["reasoning.encrypted_content"]

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_fake_1", "get_weather", '{"city":"Oslo"}')
    assert first.usage.prompt_tokens == 30 and first.usage.prompt_tokens_details.cached_tokens == 10

    second = client.chat.completions.create(
        model="openai/gpt-5.5",
        tools=[WEATHER_TOOL],
        messages=[
            *ASK,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 4}'},
        ],
    )
    items = upstream.last_body()["input"]
    assert items[1] == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
    }
    assert items[2] == {
        "type": "function_call",
        "call_id": "call_fake_1",
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
    }, "call_id only: an fc_ id without reasoning is refused"
    assert items[3] == {"type": "function_call_output", "call_id": "call_fake_1", "output": '{"temp_c": 4}'}
    assert second.choices[0].message.content == 'The tool said: {"temp_c": 4}'
    assert second.choices[0].finish_reason == "stop"


def test_reasoning_tokens_are_reported_inside_completion_tokens(client: openai.OpenAI, upstream: Any) -> None:
    answer = client.chat.completions.create(
        model="openai/gpt-5.4", messages=ASK, tools=[WEATHER_TOOL], reasoning_effort="high"
    )
    assert paths(upstream) == ["/v1/responses"]
    assert upstream.last_body()["reasoning"] == {"effort": "high"}
    assert answer.usage.completion_tokens == 84
    assert answer.usage.completion_tokens_details.reasoning_tokens == 64
    assert answer.choices[0].message.model_extra["reasoning_content"] == "Thinking it over."


def test_chat_stays_on_chat_when_no_reasoning_is_involved(client: openai.OpenAI, upstream: Any) -> None:
    client.chat.completions.create(model="openai/gpt-5.4", messages=ASK, tools=[WEATHER_TOOL])  # reasons only if asked
    client.chat.completions.create(model="openai/gpt-5.5", messages=ASK, tools=[WEATHER_TOOL], reasoning_effort="none")
    client.chat.completions.create(model="openai/gpt-5.5", messages=ASK)  # no tools
    assert paths(upstream) == ["/v1/chat/completions"] * 3


def test_streamed_tool_call_over_responses(client: openai.OpenAI, upstream: Any) -> None:
    chunks = list(
        client.chat.completions.create(
            model="openai/gpt-5.5",
            messages=ASK,
            tools=[WEATHER_TOOL],
            reasoning_effort="low",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert paths(upstream) == ["/v1/responses"]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert reasoning == "Thinking it over."
    assert "".join(d.content or "" for d in deltas) == "Let me check.", "text and a call in one turn both arrive"
    fragments = [tc for d in deltas for tc in d.tool_calls or ()]
    assert fragments[0].id == "call_fake_1" and fragments[0].function.name == "get_weather"
    assert all(f.index == 0 for f in fragments)
    assert "".join(f.function.arguments or "" for f in fragments) == '{"city":"Oslo"}'
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens_details.reasoning_tokens == 64


def test_streamed_two_turn_tool_round_trip_over_responses(client: openai.OpenAI, upstream: Any) -> None:
    def turn(messages: list[dict[str, Any]]) -> tuple[str, dict[int, dict[str, str]], str | None]:
        text, calls, finish = "", {}, None
        for chunk in client.chat.completions.create(
            model="openai/gpt-5.5", messages=messages, tools=[WEATHER_TOOL], stream=True
        ):
            for choice in chunk.choices:
                text += choice.delta.content or ""
                for fragment in choice.delta.tool_calls or ():
                    call = calls.setdefault(
                        fragment.index, {"id": fragment.id, "name": fragment.function.name, "arguments": ""}
                    )
                    call["arguments"] += fragment.function.arguments or ""
                finish = choice.finish_reason or finish
        return text, calls, finish

    text, calls, finish = turn(ASK)
    assert (text, finish) == ("Let me check.", "tool_calls")
    call = calls[0]
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": text,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "4 degrees"},
    ]
    text, calls, finish = turn(history)
    assert (text, calls, finish) == ("The tool said: 4 degrees", {}, "stop")
    assert paths(upstream) == ["/v1/responses", "/v1/responses"]
    assert upstream.last_body()["input"][-1] == {
        "type": "function_call_output",
        "call_id": "call_fake_1",
        "output": "4 degrees",
    }


def test_a_failed_response_mid_stream_becomes_an_error_event(http: httpx.Client, upstream: Any) -> None:
    upstream.script(
        {
            "sse": [
                'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
                '"response":{"id":"resp_1","model":"gpt-5.5","created_at":1,"output":[]}}',
                'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,'
                '"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hal"}',
                'event: response.failed\ndata: {"type":"response.failed","sequence_number":2,"response":{"id":"resp_1",'
                '"status":"failed","error":{"code":"server_error","message":"The model crashed."}}}',
            ]
        }
    )
    body = {"model": "openai/gpt-5.5", "messages": ASK, "tools": [WEATHER_TOOL], "stream": True}
    with http.stream("POST", "/external/v1/chat/completions", json=body) as response:
        raw = response.read().decode()
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hal"}
    assert events[-1]["error"]["code"] == "upstream_server_error"  # routes.toml: a 5xx keeps no upstream text


# ------------------------------------------------------------------------------- /responses clients


def test_responses_pass_through_to_openai(client: openai.OpenAI, upstream: Any) -> None:
    response = client.responses.create(
        model="openai/gpt-5.5", input="Say hello.", store=True, reasoning={"effort": "low", "summary": "auto"}
    )
    assert paths(upstream) == ["/v1/responses"]
    assert upstream.last_body() == {
        "model": "gpt-5.5",
        "input": "Say hello.",
        "store": True,
        "reasoning": {"effort": "low", "summary": "auto"},
    }
    assert response.output_text == "Hello from the fake upstream."
    assert response.usage.output_tokens_details.reasoning_tokens == 64


def test_streamed_responses_pass_through_with_named_events(client: openai.OpenAI, upstream: Any) -> None:
    events = list(client.responses.create(model="openai/gpt-4.1", input="Say hello.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello from the fake upstream."


def test_responses_for_a_chat_only_provider(client: openai.OpenAI, upstream: Any) -> None:
    response = client.responses.create(
        model="meta-llama/llama-3.3-70b", instructions="Be brief.", input="Say hello.", max_output_tokens=64
    )
    assert paths(upstream) == ["/v1/chat/completions"]
    assert upstream.last_body() == {
        "model": "llama-3.3-70b-versatile",
        "max_tokens": 64,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
    }
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hello from the fake upstream."
    assert response.model == "meta-llama/llama-3.3-70b"
    assert response.usage.input_tokens == 12 and response.usage.output_tokens == 7


def test_responses_tool_round_trip_on_a_chat_only_provider(client: openai.OpenAI, upstream: Any) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}
    first = client.responses.create(model="meta-llama/llama-3.3-70b", input="Weather in Oslo?", tools=[tool])
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.call_id, call.name, call.arguments) == ("call_fake_1", "get_weather", '{"city":"Oslo"}')
    assert upstream.last_body()["tools"] == [
        WEATHER_TOOL | {"function": {"name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}}
    ]

    second = client.responses.create(
        model="meta-llama/llama-3.3-70b",
        tools=[tool],
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "4 degrees"},
        ],
    )
    messages = upstream.last_body()["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "call_fake_1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_fake_1", "content": "4 degrees"}
    assert second.output_text == "The tool said: 4 degrees"


def test_streamed_responses_for_a_chat_only_provider(client: openai.OpenAI, upstream: Any) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}
    events = list(
        client.responses.create(model="meta-llama/llama-3.3-70b", input="Weather?", tools=[tool], stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_weather"
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert arguments == '{"city":"Oslo"}'
    final = events[-1].response
    assert final.output[0].type == "function_call" and final.output[0].arguments == '{"city":"Oslo"}'
    assert final.usage.total_tokens == 19


def test_streamed_text_for_a_chat_only_provider(client: openai.OpenAI, upstream: Any) -> None:
    with client.responses.stream(model="meta-llama/llama-3.3-70b", input="Say hello.") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "Hello from the fake upstream." == final.output_text


def test_stateful_responses_features_are_refused_for_chat_only_providers(http: httpx.Client, upstream: Any) -> None:
    response = http.post(
        "/external/v1/responses",
        json={"model": "meta-llama/llama-3.3-70b", "previous_response_id": "resp_1", "input": "And then?"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "previous_response_id"
    response = http.post(
        "/external/v1/responses",
        json={"model": "meta-llama/llama-3.3-70b", "input": "hi", "tools": [{"type": "web_search"}]},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "tools[0]"
    assert upstream.requests() == []


def test_responses_requests_are_validated(http: httpx.Client) -> None:
    response = http.post("/external/v1/responses", json={"model": "openai/gpt-4.1"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    response = http.post(
        "/external/v1/responses", json={"model": "openai/gpt-4.1", "input": "x", "max_output_tokens": 5}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "max_output_tokens"
