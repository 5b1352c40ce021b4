"""Every wire codec's raising, pinned like its lowering: recorded upstream answers (JSON and SSE) in
tests/responses/<wire>/ → what the gateway's clients receive, one snapshot file per recorded answer.

For each answer the snapshot shows the canonical chat result (what /chat/completions clients get, with
and without the usage chunk requested), the usage metered, and, for wires without a passthrough, the same answer
rendered for /responses clients. Wires with a native passthrough (Responses) show that instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.answers import AnswerFilter, AnswerRefused
from engine.catalog import Catalog
from engine.errors import GatewayError, status_of
from engine.shapes.base import Renderer
from engine.shapes.chat import CHAT
from engine.shapes.responses import FromChatRenderer, NativeRenderer
from engine.spec.loader import load_specs
from engine.wires import WIRES
from engine.wires.base import Call, UpstreamError, Wire
from engine.wires.sse import iter_events
from tests.conftest import SPECS

RECORDED = Path(__file__).parent / "responses"
CASES = sorted(p for p in RECORDED.glob("*/*") if p.suffix in (".json", ".sse"))
RESPONSES_REQUEST = {"model": "acme/model", "input": "Weather in Oslo?"}
PROVIDERS = Catalog.from_specs(load_specs(SPECS), env={}).providers


def wire_of(directory: str) -> tuple[Wire, AnswerFilter | None]:
    """tests/responses/<wire>/ holds a codec's answers; tests/responses/<provider>/ a provider's, raised
    through its `[answers]` and then its default wire."""
    if directory in WIRES:
        return WIRES[directory], None
    provider = PROVIDERS[directory]
    return provider.wire, provider.answers


# Codecs that translate finish reasons read the table of the shipped spec that uses them.
FINISH_REASONS = {
    f.spec.provider.wire: f.spec.finish_reasons for f in load_specs(SPECS).providers if f.spec.finish_reasons
}


def call(wire: Wire, include_usage: bool, stream: bool) -> Call:
    return Call(
        public_model="acme/model",
        upstream_model="upstream-model",
        stream=stream,
        include_usage=include_usage,
        finish_reasons=FINISH_REASONS.get(wire.name, {}),
    )


def sanitize(status: int | None, error: UpstreamError) -> GatewayError:
    """No rules here: the raised error as it would reach the sanitizer (the error corpus tests the rules)."""
    status = status or error.status or status_of(error.code, error.type)
    return GatewayError(status, error.message, type=error.type, code=error.code, param=error.param)


async def _chunks(raw: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(raw), 97):  # odd-sized pieces: events must survive arbitrary splits
        yield raw[i : i + 97]


async def render(
    wire: Wire, renderer: Renderer, raw: bytes, include_usage: bool, answers: AnswerFilter | None = None
) -> list[Any]:
    trip = call(wire, include_usage, stream=True)
    frames: list[Any] = []
    events = iter_events(_chunks(raw))
    if answers is not None:
        events = answers.events(events)
    try:
        async for out in renderer.frames(wire.raise_stream(events, trip), trip, sanitize):
            frames.append(out)
    except AnswerRefused as refused:  # the proxy answers it as an error (an HTTP status, if nothing went out)
        frames.append({"refused": dataclasses.asdict(refused.error)})
    except Exception as exc:  # a broken stream: the proxy would send renderer.broken(...)
        frames.append(f"raises {type(exc).__name__}: {exc}")
    decoded = []
    for frame in frames:
        if isinstance(frame, str | dict):
            decoded.append(frame)
            continue
        text = frame.decode()
        event = text.split("\n", 1)[0][7:] if text.startswith("event: ") else None
        data = text[text.index("data: ") + 6 :].strip()
        body = data if data == "[DONE]" else msgspec.json.decode(data)
        decoded.append({"event": event, "data": body} if event else body)
    return [*decoded, {"metered": trip.usage.shown() if trip.usage else None}]


def raised_json(wire: Wire, doc: dict[str, Any], answers: AnswerFilter | None = None) -> dict[str, Any]:
    trip = call(wire, include_usage=False, stream=False)
    refused = answers.apply(doc) if answers is not None else None
    if refused is not None:
        return {"refused": dataclasses.asdict(refused)}
    answer = wire.raise_json(doc, trip)
    metered = trip.usage.shown() if trip.usage else None
    if isinstance(answer, UpstreamError):  # a 200 that the codec reads as an error
        return {"upstream_error": dataclasses.asdict(answer), "metered": metered}
    result: dict[str, Any] = {"chat": answer, "metered": metered}
    if wire.shape != "responses":  # raised to chat: /responses clients get it converted
        result["as_responses"] = FromChatRenderer(RESPONSES_REQUEST, "acme/model").json(answer, trip)
    return result


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}--{p.name}" for p in CASES])
def test_raised_answers(path: Path, snapshot_json: Any) -> None:
    wire, answers = wire_of(path.parent.name)
    raw = path.read_bytes()
    if path.suffix == ".json":
        result = raised_json(wire, msgspec.json.decode(raw), answers)
    else:
        result = {
            "chat_stream": asyncio.run(render(wire, CHAT, raw, True, answers)),
            "chat_stream_without_usage_requested": asyncio.run(render(wire, CHAT, raw, False, answers)),
        }
        if wire.shape != "responses":  # raised to chat: /responses clients get it converted
            result["as_responses_stream"] = asyncio.run(
                render(wire, FromChatRenderer(RESPONSES_REQUEST, "acme/model"), raw, True, answers)
            )
        else:
            native = wire.native
            result["native_passthrough"] = asyncio.run(render(native, NativeRenderer(), raw, True))
    assert result == snapshot_json


def test_every_wire_has_recorded_answers() -> None:
    assert set(WIRES) <= {p.parent.name for p in CASES}, "add tests/responses/<wire>/ for a new codec"


def test_every_provider_with_answer_quirks_has_recorded_answers() -> None:
    quirky = {p.id for p in PROVIDERS.values() if p.answers is not None}
    assert quirky <= {p.parent.name for p in CASES}, "add tests/responses/<provider>/ for its [answers]"
