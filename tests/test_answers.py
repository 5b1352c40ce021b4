"""`[answers] content_parts`: typed content parts folded into chat's text fields, for any provider's part
types (Mistral's are in its spec and its raising snapshots; these use made-up ones)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from engine.answers import AnswerFilter
from engine.spec.models import Answers
from engine.wires.sse import Event

PARTS = AnswerFilter.compile(
    Answers.model_validate(
        {
            "content_parts": {
                "reasoning": {"into": "reasoning_content", "text": "summary[].text"},
                "output_text": {"into": "content", "text": "text"},
            }
        }
    )
)


def folded(content: Any, key: str = "message") -> dict[str, Any]:
    assert PARTS is not None
    doc = {"choices": [{"index": 0, key: {"role": "assistant", "content": content}}]}
    assert PARTS.apply(doc) is None
    return doc["choices"][0][key]


def test_listed_part_types_join_their_fields_in_order_and_others_are_dropped() -> None:
    message = folded(
        [
            {"type": "reasoning", "summary": [{"text": "First, "}, {"text": "then."}]},
            {"type": "citation", "url": "https://example.invalid"},
            {"type": "output_text", "text": "Answer "},
            {"type": "output_text", "text": "here."},
        ]
    )
    assert message == {"role": "assistant", "content": "Answer here.", "reasoning_content": "First, then."}


def test_a_string_content_is_left_alone_and_a_reasoning_only_answer_has_null_content() -> None:
    assert folded("plain") == {"role": "assistant", "content": "plain"}
    assert folded([{"type": "reasoning", "summary": [{"text": "hm"}]}]) == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "hm",
    }


def test_a_stream_delta_of_reasoning_only_carries_no_content() -> None:
    delta = folded([{"type": "reasoning", "summary": [{"text": "hm"}]}], key="delta")
    assert delta == {"role": "assistant", "reasoning_content": "hm"}


def test_stream_events_without_a_part_type_pass_undecoded() -> None:
    assert PARTS is not None
    plain = Event(b'{"choices":[{"delta":{"content":"hi"}}]}')
    typed = Event(b'{"choices":[{"delta":{"content":[{"type":"output_text","text":"hi"}]}}]}')

    async def run() -> list[Event]:
        async def events() -> AsyncIterator[Event]:
            yield plain
            yield typed

        assert PARTS is not None
        return [event async for event in PARTS.events(events())]

    first, second = asyncio.run(run())
    assert first is plain, "not decoded: it names no part type"
    assert msgspec.json.decode(second.data) == {"choices": [{"delta": {"content": "hi"}}]}
