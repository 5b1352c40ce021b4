"""The Gemini codec's contracts that snapshots alone do not state: a raised signature comes back on the same
part, ids are stable between JSON and streams, and the catalog decides the thinking knob."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import carry
from engine.catalog import Catalog
from engine.errors import GatewayError
from engine.lower import lower_request
from engine.select import select_wire
from engine.spec.loader import load_specs
from engine.wires.base import Call
from engine.wires.gemini import SKIP_SIGNATURE, GeminiWire, lower_tool_choice, pack_state, unpack_state
from engine.wires.sse import Event
from tests.conftest import SPECS, WEATHER_TOOL

RECORDED = Path(__file__).parent / "responses" / "gemini"
CATALOG = Catalog.from_specs(load_specs(SPECS), env={})
WIRE = GeminiWire()


def candidate(model: str) -> Any:
    return CATALOG.all_candidates(model)[0]


def trip(model: str = "google/gemini-3-flash", stream: bool = False) -> Call:
    found = candidate(model)
    return Call(model, found.row.upstream, stream=stream, finish_reasons=found.provider.spec.finish_reasons)


def lowered(model: str, request: dict[str, Any]) -> dict[str, Any]:
    found = candidate(model)
    body = {"model": model, **request}
    return lower_request(found, body, select_wire(found, body, "chat.completions"), "chat.completions").body


def raised(name: str, model: str = "google/gemini-3-flash") -> dict[str, Any]:
    answer = WIRE.raise_json(json.loads((RECORDED / name).read_text()), trip(model))
    assert isinstance(answer, dict)
    return dict(answer["choices"][0]["message"])


def follow_up(message: dict[str, Any]) -> dict[str, Any]:
    results = [{"role": "tool", "tool_call_id": c["id"], "content": '{"temp_c": 4}'} for c in message["tool_calls"]]
    return {
        "messages": [{"role": "user", "content": "Weather?"}, message, *results],
        "tools": [WEATHER_TOOL],
    }


def model_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for c in body["contents"] if c["role"] == "model" for p in c["parts"]]


def test_a_raised_signature_comes_back_exactly_on_its_own_part() -> None:
    recorded = json.loads((RECORDED / "parallel_calls.json").read_text())
    signature = recorded["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    message = raised("parallel_calls.json")
    assert all(carry.ALPHABET.fullmatch(c["id"]) for c in message["tool_calls"])
    body = lowered("google/gemini-3-flash", follow_up(message))
    parts = model_parts(body)
    assert parts[0]["thoughtSignature"] == signature
    assert "thoughtSignature" not in parts[1], "parallel calls: only the first was signed, only it is sent"
    assert [p["functionCall"]["args"]["city"] for p in parts] == ["Oslo", "Bergen"]


def test_geminis_own_call_id_is_sent_back_on_the_call_and_its_response() -> None:
    message = raised("call_with_upstream_id.json", "google/gemini-2.5-flash")
    body = lowered("google/gemini-2.5-flash", follow_up(message))
    assert model_parts(body)[0]["functionCall"]["id"] == "fc_8e2a"
    assert body["contents"][-1]["parts"][0]["functionResponse"]["id"] == "fc_8e2a"


def test_unsigned_history_gets_googles_skip_placeholder_on_each_steps_first_call() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    second = {**call, "id": "call_2"}
    body = lowered(
        "google/gemini-3-pro", follow_up({"role": "assistant", "content": None, "tool_calls": [call, second]})
    )
    assert [p.get("thoughtSignature") for p in model_parts(body)] == [SKIP_SIGNATURE, None]


async def _events(chunks: list[dict[str, Any]]) -> AsyncIterator[Event]:
    for chunk in chunks:
        yield Event(data=json.dumps(chunk).encode(), event=None)


def _stream(chunks: list[dict[str, Any]], call: Call) -> list[Any]:
    async def run() -> list[Any]:
        return [item async for item in WIRE.raise_stream(_events(chunks), call)]

    return asyncio.run(run())


def test_ids_are_the_same_whether_the_answer_was_streamed_or_not() -> None:
    doc = json.loads((RECORDED / "parallel_calls.json").read_text())
    parts = doc["candidates"][0]["content"]["parts"]
    signature = parts[0].pop("thoughtSignature")
    meta = {"responseId": doc["responseId"], "modelVersion": doc["modelVersion"]}
    chunks = [
        {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}], **meta},
        {  # the signature arrives later, on an empty part: it still belongs to the first call
            "candidates": [
                {"content": {"parts": [{"text": "", "thoughtSignature": signature}]}, "finishReason": "STOP"}
            ],
            **meta,
        },
    ]
    streamed = [
        f for item in _stream(chunks, trip(stream=True)) for f in item["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [f["id"] for f in streamed] == [c["id"] for c in raised("parallel_calls.json")["tool_calls"]]
    assert all(f["function"]["name"] == "get_weather" for f in streamed), "id and name in the first fragment"


def test_signature_state_round_trips_base64_and_other_text() -> None:
    assert unpack_state(pack_state("QUJD", True)) == ("QUJD", True)
    assert unpack_state(pack_state("not base64!", False)) == ("not base64!", False)
    assert unpack_state(pack_state("QUJD", False))[0] == "QUJD"
    assert len(pack_state("QUJD" * 100, False)) < len("QUJD" * 100), "kept decoded: shorter ids"
    assert pack_state(None, False) == b""


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("google/gemini-3-pro", "medium", {"thinkingLevel": "high", "includeThoughts": True}),
        ("google/gemini-3-flash", "minimal", {"thinkingLevel": "minimal", "includeThoughts": True}),
        ("google/gemini-2.5-pro", "none", {"thinkingBudget": 128}),
        ("google/gemini-2.5-flash", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ],
)
def test_reasoning_effort_becomes_the_one_knob_the_catalog_names(
    model: str, effort: str, expected: dict[str, Any]
) -> None:
    body = lowered(model, {"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": effort})
    assert body["generationConfig"]["thinkingConfig"] == expected


def test_an_effort_the_model_does_not_take_is_refused_with_the_ones_it_does() -> None:
    with pytest.raises(GatewayError) as caught:
        lowered("google/gemini-3-pro", {"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "xhigh"})
    assert caught.value.status == 400 and caught.value.param == "reasoning_effort"
    assert "`low`" in caught.value.message


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "f"}}]},
            },
            {"mode": "VALIDATED", "allowedFunctionNames": ["f"]},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]},
            },
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
    ],
)
def test_tool_choice_becomes_function_calling_config(choice: Any, config: dict[str, Any]) -> None:
    assert lower_tool_choice(choice) == config


def test_a_tool_result_for_an_unknown_call_is_refused_before_sending() -> None:
    request = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "4"}]
    }
    with pytest.raises(GatewayError) as caught:
        lowered("google/gemini-2.5-flash", request)
    assert caught.value.param == "messages[1].tool_call_id"
