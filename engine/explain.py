"""What a client would get for a recorded upstream error, and which rule decided it, without a live provider.

`engine lower --error FILE --status N --provider P` prints it, and tests/test_error_snapshots.py pins it
for a corpus of recorded errors from every shipped provider. Both go through the same steps as a live
request: the provider's `[answers]`, its wire codec (`error_of`, `raise_json`, `raise_stream`), then the
sanitizer's rules; so what a spec author sees here is what the gateway does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from engine.answers import AnswerRefused
from engine.catalog import Provider
from engine.sanitize import Sanitizer
from engine.wires.base import Call, StreamBroken, UpstreamError
from engine.wires.sse import iter_events


@dataclasses.dataclass(frozen=True)
class Found:
    error: UpstreamError | None
    status: int | None  # the upstream HTTP status, None for an error inside a 200 or a stream
    delivered: str  # how the client learns of it


def _call(provider: Provider, stream: bool = False) -> Call:
    """A live request's Call, as far as raising an error depends on it: the spec's finish-reason table."""
    return Call("recorded", "recorded", stream=stream, finish_reasons=provider.spec.finish_reasons)


def _in_json(provider: Provider, status: int, body: bytes) -> Found:
    if status >= 400:
        return Found(provider.wire.error_of(body), status, "http_status")
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return Found(None, None, "not an error: the gateway answers 502 upstream_invalid_response")
    if not isinstance(doc, dict):
        return Found(None, None, "not an error: the answer is not a JSON object")
    refused = provider.answers.apply(doc) if provider.answers is not None else None
    if refused is not None:
        return Found(refused, None, "http_status")
    raised = provider.wire.raise_json(doc, _call(provider))
    if isinstance(raised, UpstreamError):
        return Found(raised, None, "http_status")
    return Found(None, None, "not an error: the answer is raised as a success")


async def _in_stream(provider: Provider, body: bytes) -> Found:
    async def chunks() -> AsyncIterator[bytes]:
        yield body

    events = iter_events(chunks())
    if provider.answers is not None:
        events = provider.answers.events(events)
    relayed = 0
    try:
        async for item in provider.wire.raise_stream(events, _call(provider, stream=True)):
            if isinstance(item, UpstreamError):
                return Found(item, None, _where(relayed))
            relayed += 1
    except AnswerRefused as refused:
        return Found(refused.error, None, _where(relayed))
    except StreamBroken as exc:
        return Found(None, None, f"not an upstream error: the stream is cut ({exc}); {_where(relayed)}")
    return Found(None, None, "not an error: the stream completes")


def _where(relayed: int) -> str:
    if relayed == 0:
        return "http_status"  # nothing went out yet: the status is still the gateway's to choose
    return f"stream_error_event after {relayed} chunk(s)"


def explain(sanitizer: Sanitizer, status: int, body: bytes, stream: bool = False) -> dict[str, Any]:
    """The recorded upstream answer → what the client receives, and why."""
    provider = sanitizer.provider
    found = asyncio.run(_in_stream(provider, body)) if stream else _in_json(provider, status, body)
    shown: dict[str, Any] = {"provider": provider.id, "delivered": found.delivered}
    if found.error is None:
        return shown
    error, rule = sanitizer.explain(found.status, found.error)
    answer_as = next((r.rule.answer_as for r in sanitizer.rules if r.rule.name == rule), None)
    shown["upstream"] = {k: v for k, v in dataclasses.asdict(found.error).items() if k != "keys"}
    shown["rule"] = rule or "(none: the safe default keeps the status and the scrubbed message)"
    if answer_as:
        shown["answers_as"] = answer_as
    shown["client"] = {"status": error.status, "body": error.payload()}
    return shown
