"""A provider's answer quirks, as its spec's `[answers]` declare them, handled before the codec raises.

Some providers add to OpenAI's answer shape (Azure's `prompt_filter_results` and per-choice
`content_filter_results`), some answer a refusal with a 200 (a prompt their filter blocked), and some
answer content as a list of typed parts (Mistral's `thinking` and `text` chunks) where OpenAI's clients
expect a string and `reasoning_content`. The spec names the paths to remove, the values that mean
"refused" and the part types to fold into text; this module applies them to a JSON answer, or to each
stream event. Only events that mention one of the spec's keys are decoded, so a
provider without `[answers]`, and every chunk that does not mention them, costs nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec

from engine.mapping import MISSING, Segment, parse_path, update
from engine.spec.models import AnswerError, Answers, ContentPart
from engine.wires.base import UpstreamError
from engine.wires.sse import Event

_decode = msgspec.json.decode
_encode = msgspec.json.encode


class AnswerRefused(Exception):
    """Raised from inside a stream when a chunk is a refusal; the proxy answers it as an upstream error."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


def values_at(node: Any, path: tuple[str, ...]) -> list[Any]:
    """Every value at `path`: keys descend, `k[]` walks the elements of list `k`, `*` every value of an object."""
    found = [node]
    for part in path:
        nxt: list[Any] = []
        for value in found:
            if part == "*":
                nxt += list(value.values()) if isinstance(value, dict) else []
                continue
            key, each = part.removesuffix("[]"), part.endswith("[]")
            child = value.get(key, MISSING) if isinstance(value, dict) else MISSING
            if child is MISSING:
                continue
            if each:
                nxt += child if isinstance(child, list) else []
            else:
                nxt.append(child)
        found = nxt
    return found


@dataclass(frozen=True)
class _Refusal:
    spec: AnswerError
    path: tuple[str, ...]

    def matches(self, doc: dict[str, Any]) -> bool:
        return any(value is True for value in values_at(doc, self.path))

    def error(self) -> UpstreamError:
        spec = self.spec
        return UpstreamError(message=spec.message, type=spec.type, code=spec.code, status=spec.status)


def _marker(path: str) -> bytes:
    """The most specific key a path names: an answer without it cannot match the path."""
    literal = [p.removesuffix("[]") for p in path.split(".") if p != "*"]
    return f'"{literal[-1]}"'.encode()


@dataclass(frozen=True)
class _Parts:
    """The spec's `content_parts`: typed content parts folded into chat's text fields."""

    by_type: dict[str, tuple[str, tuple[str, ...]]]  # part type → (the field it joins, its text's path)

    @classmethod
    def compile(cls, parts: dict[str, ContentPart]) -> _Parts:
        return cls({kind: (part.into, tuple(part.text.split("."))) for kind, part in parts.items()})

    def fold(self, doc: dict[str, Any]) -> None:
        """Each choice's message (JSON) or delta (stream chunk) whose content is a list, folded into text."""
        choices = doc.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            for key in ("message", "delta"):
                message = choice.get(key) if isinstance(choice, dict) else None
                if isinstance(message, dict) and isinstance(message.get("content"), list):
                    self._fold(message, partial=key == "delta")

    def _fold(self, message: dict[str, Any], partial: bool) -> None:
        texts: dict[str, list[str]] = {"content": [], "reasoning_content": []}
        for part in message["content"]:
            found = self.by_type.get(str(part.get("type"))) if isinstance(part, dict) else None
            if found is not None:
                into, path = found
                texts[into] += [text for text in values_at(part, path) if isinstance(text, str)]
        content = "".join(texts["content"])
        if content or not partial:
            message["content"] = content or None
        else:
            del message["content"]  # a delta of thinking only: no content in this chunk
        reasoning = "".join(texts["reasoning_content"])
        if reasoning:
            message["reasoning_content"] = (message.get("reasoning_content") or "") + reasoning


@dataclass(frozen=True)
class AnswerFilter:
    drops: tuple[tuple[Segment, ...], ...]
    refusals: tuple[_Refusal, ...]
    markers: tuple[bytes, ...]
    parts: _Parts | None = None

    @classmethod
    def compile(cls, answers: Answers) -> AnswerFilter | None:
        if not answers.drop and not answers.errors and not answers.content_parts:
            return None
        refusals = tuple(_Refusal(e, tuple(e.when_true.split("."))) for e in answers.errors)
        markers = {_marker(p) for p in answers.drop} | {_marker(e.when_true) for e in answers.errors}
        markers |= {f'"{kind}"'.encode() for kind in answers.content_parts}  # a part's `"type": "<kind>"`
        parts = _Parts.compile(answers.content_parts) if answers.content_parts else None
        return cls(tuple(parse_path(p) for p in answers.drop), refusals, tuple(sorted(markers)), parts)

    def refusal(self, doc: dict[str, Any]) -> tuple[str, UpstreamError] | None:
        """(the rule's name, its error) when the answer is a refusal."""
        for refusal in self.refusals:
            if refusal.matches(doc):
                return refusal.spec.name, refusal.error()
        return None

    def apply(self, doc: Any) -> UpstreamError | None:
        """Clean a decoded answer in place; its error instead, when it is a refusal."""
        if not isinstance(doc, dict):
            return None
        refused = self.refusal(doc)
        if refused is not None:
            return refused[1]
        for segments in self.drops:
            update(doc, segments, lambda _old: MISSING)
        if self.parts is not None:
            self.parts.fold(doc)
        return None

    async def events(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """Each event cleaned; a refusal raises `AnswerRefused`. Events that mention no marker pass as they are."""
        markers = self.markers
        async for event in events:
            data = event.data
            if any(m in data for m in markers):
                try:
                    doc = _decode(data)
                except msgspec.DecodeError:
                    yield event  # the codec reports what is not JSON
                    continue
                refused = self.apply(doc)
                if refused is not None:
                    raise AnswerRefused(refused)
                event = Event(_encode(doc), event.event)
            yield event
