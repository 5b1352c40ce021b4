"""Gemini end to end: the shared `engine serve` (tests/conftest.py) in front of the loopback Gemini fake
(tests/fakes/gemini_fake.py), which refuses, as Google does, a Gemini 3 function call that comes back
without its thought signature.

The tool loops here are run by real clients: the official OpenAI SDK (chat and /responses, streaming and
not) and the Vercel AI SDK, which echoes only `id`, `type` and `function` of earlier tool calls. They
pass only if the signature travels in the tool-call id (engine/carry.py) and is put back on its part.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import GEMINI_KEY, WEATHER_TOOL
from tests.servers import Fake, Gateway

SKIP = "skip_thought_signature_validator"
CLIENT = Path(__file__).parent / "clients" / "vercel_ai_sdk"


@pytest.fixture
def gemini(gemini_fake: Fake) -> Fake:
    gemini_fake.reset()
    return gemini_fake


@pytest.fixture
def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=30)


def weather(arguments: str) -> str:
    city = json.loads(arguments)["city"]
    return json.dumps({"city": city, "temp_c": len(city)})


def _streamed_turn(sdk: openai.OpenAI, model: str, messages: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    text, calls, finish = "", {}, None
    stream = sdk.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for fragment in choice.delta.tool_calls or ():
                if fragment.index not in calls:
                    assert fragment.id and fragment.function and fragment.function.name, "id and name come first"
                    calls[fragment.index] = {
                        "id": fragment.id,
                        "type": "function",
                        "function": {"name": "", "arguments": ""},
                    }
                call = calls[fragment.index]["function"]
                call["name"] += (fragment.function.name or "") if fragment.function else ""
                call["arguments"] += (fragment.function.arguments or "") if fragment.function else ""
            finish = choice.finish_reason or finish
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message, str(finish)


def chat_loop(sdk: openai.OpenAI, model: str, prompts: list[str], stream: bool) -> list[dict[str, Any]]:
    """Run the tool loop the way an agent does; returns the whole conversation."""
    messages: list[dict[str, Any]] = []
    for prompt in prompts:
        messages.append({"role": "user", "content": prompt})
        for _ in range(4):
            if stream:
                message, finish = _streamed_turn(sdk, model, messages)
            else:
                answer = sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
                message = answer.choices[0].message.model_dump(exclude_none=True)
                finish = answer.choices[0].finish_reason
            messages.append(message)
            if finish != "tool_calls":
                break
            for call in message["tool_calls"]:
                messages.append(
                    {"role": "tool", "tool_call_id": call["id"], "content": weather(call["function"]["arguments"])}
                )
    return messages


def signatures_sent(gemini: Fake) -> list[list[str | None]]:
    """Per request to the fake: the thoughtSignature of every functionCall part, in order."""
    return [
        [p.get("thoughtSignature") for c in r["body"]["contents"] for p in c["parts"] if "functionCall" in p]
        for r in gemini.requests()
    ]


def assert_signatures_survive(gemini: Fake) -> None:
    """Each call's signature, once sent back, is sent back unchanged in every later request; the first call
    of every step Gemini made has a real one (the fake checked it is one it issued)."""
    sent = signatures_sent(gemini)
    assert sent[-1], "the conversation made function calls"
    for earlier, later in itertools.pairwise(sent):
        assert later[: len(earlier)] == earlier
    assert SKIP not in sent[-1]
    assert sent[-1][0] is not None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model", ["google/gemini-3-pro", "google/gemini-3-flash"])
def test_openai_sdk_tool_loop_keeps_thought_signatures(
    sdk: openai.OpenAI, gemini: Fake, model: str, stream: bool
) -> None:
    messages = chat_loop(sdk, model, ["Weather in Oslo and Bergen?", "Weather in Oslo, then decide."], stream)
    calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or ()]
    # turn 1: two parallel calls; turn 2: two sequential steps of one call each
    assert [json.loads(c["function"]["arguments"])["city"] for c in calls] == ["Oslo", "Bergen", "Oslo", "Bergen"]
    assert len({c["id"] for c in calls}) == 4
    assert messages[-1]["content"].startswith("The tool said:")
    assert_signatures_survive(gemini)
    sent = signatures_sent(gemini)[-1]
    assert sent[1] is None, "a parallel call that came without a signature goes back without one"
    assert sent[2] is not None and sent[3] is not None and sent[2] != sent[3], "each sequential step its own"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_responses_api_tool_loop_keeps_thought_signatures(sdk: openai.OpenAI, gemini: Fake, stream: bool) -> None:
    tool = {"type": "function", **WEATHER_TOOL["function"]}
    items: list[Any] = [{"role": "user", "content": "Weather in Oslo, then decide."}]
    for _ in range(4):
        if stream:
            with sdk.responses.stream(model="google/gemini-3-pro", input=items, tools=[tool]) as events:
                response = events.get_final_response()
        else:
            response = sdk.responses.create(model="google/gemini-3-pro", input=items, tools=[tool])
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            break
        for call in calls:  # echo only what a minimal client keeps: call_id, name, arguments
            items.append(
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments}
            )
            items.append({"type": "function_call_output", "call_id": call.call_id, "output": weather(call.arguments)})
    assert response.output_text.startswith("The tool said:")
    assert len([i for i in items if isinstance(i, dict) and i.get("type") == "function_call"]) == 2
    assert_signatures_survive(gemini)


def run_vercel_loop(gateway: Gateway, model: str, mode: str, api: str, effort: str | None = None) -> dict[str, Any]:
    """tests/clients/vercel_ai_sdk/tool_loop.mjs's two-turn loop; with `effort`, the SDK asks for reasoning."""
    node = shutil.which("node")
    assert node, "node is required for the Vercel AI SDK test (see the Makefile)"
    assert (CLIENT / "node_modules" / "ai").is_dir(), "run `make test` (npm ci in tests/clients/vercel_ai_sdk)"
    result = subprocess.run(
        [
            node,
            str(CLIENT / "tool_loop.mjs"),
            gateway.url,
            gateway.key,
            model,
            mode,
            api,
            *([effort] if effort else []),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_vercel_ai_sdk_tool_loop_keeps_thought_signatures(gateway: Gateway, gemini: Fake, mode: str, api: str) -> None:
    seen = run_vercel_loop(gateway, "google/gemini-3-flash", mode, api)
    assert [t["errors"] for t in seen["turns"]] == [[], []]
    assert seen["executed"] == ["Oslo", "Bergen", "Oslo"]
    assert all(t["text"].startswith("The tool said:") for t in seen["turns"])
    assert all(i.startswith("cr1-gemini-") for i in seen["toolCallIds"][:1]), "the first call carries its signature"
    assert_signatures_survive(gemini)


def test_conversation_moving_to_another_provider_sends_it_plain_ids(
    sdk: openai.OpenAI, gemini: Fake, fake: Fake
) -> None:
    fake.reset()
    messages = chat_loop(sdk, "google/gemini-3-pro", ["Weather in Oslo?"], stream=False)
    assert messages[1]["tool_calls"][0]["id"].startswith("cr1-gemini-")
    messages.append({"role": "user", "content": "Thanks. Summarize."})
    sdk.chat.completions.create(model="openai/gpt-4.1", messages=messages)
    sent = fake.last_body()["messages"]
    ids = [c["id"] for m in sent for c in m.get("tool_calls") or ()] + [
        m["tool_call_id"] for m in sent if m["role"] == "tool"
    ]
    assert ids and not any("cr1-" in i for i in ids), "a packed id never reaches another provider"
    assert len(set(ids)) == 1, "the call and its result still match"


def test_history_from_another_provider_is_not_refused(sdk: openai.OpenAI, gemini: Fake) -> None:
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fake_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake_1", "content": '{"temp_c": 4}'},
    ]
    answer = sdk.chat.completions.create(model="google/gemini-3-pro", messages=messages, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == 'The tool said: [{"temp_c": 4}]'
    assert signatures_sent(gemini) == [[SKIP]]


def _blocked_check(response: httpx.Response) -> None:
    assert response.status_code == 400
    assert response.headers["x-compose-upstream-provider"] == "gemini"
    assert response.headers["x-compose-public-model"] == "google/gemini-2.5-flash"
    error = response.json()["error"]
    assert error["code"] == "content_filter" and error["type"] == "invalid_request_error"
    assert not any(word in response.text for word in ("SAFETY", "HARM_CATEGORY", "blockReason", "Gemini"))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("prompt", ["BLOCKME please", "Say something UNSAFE"], ids=["prompt_blocked", "safety_finish"])
def test_blocked_answers_are_the_sanitized_content_filter_error(
    gateway: Gateway, gemini: Fake, stream: bool, prompt: str
) -> None:
    body = {"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": prompt}], "stream": stream}
    headers = {"Authorization": f"Bearer {gateway.key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as http:
        _blocked_check(http.post("/chat/completions", json=body))
        responses = {"model": body["model"], "input": prompt, "stream": stream}
        _blocked_check(http.post("/responses", json=responses))


@pytest.mark.parametrize(
    ("upstream", "status", "code"),
    [
        (
            {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
            },
            502,
            "upstream_auth_failed",
        ),
        (
            {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"},
            400,
            "invalid_request",
        ),
        (
            {"code": 403, "message": "Permission denied on resource project.", "status": "PERMISSION_DENIED"},
            502,
            "upstream_auth_failed",
        ),
        (
            {"code": 404, "message": "models/x is not found for API version v1beta", "status": "NOT_FOUND"},
            404,
            "model_not_found",
        ),
        (
            {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED"},
            429,
            "rate_limit_exceeded",
        ),
        (
            {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"},
            500,
            "upstream_unavailable",
        ),
        ({"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}, 503, "upstream_unavailable"),
    ],
    ids=["bad_key", "invalid_argument", "permission_denied", "not_found", "quota", "internal", "unavailable"],
)
def test_gemini_errors_become_openai_errors(
    sdk: openai.OpenAI, gemini: Fake, upstream: dict[str, Any], status: int, code: str
) -> None:
    failure = {"status": upstream["code"], "json": {"error": upstream}}
    gemini.script(failure, failure)  # retryable statuses are tried twice on the provider (its [retry] default)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="google/gemini-2.5-pro", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == status
    body = caught.value.response.json()["error"]
    assert body["code"] == code
    assert GEMINI_KEY not in caught.value.response.text
    assert caught.value.response.headers["x-compose-upstream-provider"] == "gemini"


def test_reasoning_comes_back_as_reasoning_content_with_usage(sdk: openai.OpenAI, gemini: Fake) -> None:
    answer = sdk.chat.completions.create(
        model="google/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}], reasoning_effort="low"
    )
    message = answer.choices[0].message.model_dump()
    assert message["reasoning_content"] == "Thinking about what was asked."
    assert answer.usage is not None and answer.usage.completion_tokens_details is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens == 5
    assert answer.usage.completion_tokens == 12  # candidates + thoughts
    sent = gemini.last_body()["generationConfig"]["thinkingConfig"]
    assert sent == {"thinkingBudget": 1024, "includeThoughts": True}
