"""Error rules as data: which upstream errors a provider's (and the routes') `error_rules` rewrite.

A rule holds when its optional `when` expression holds and one of its `match` entries does. A match
entry compares the upstream status, code and type with lists, searches the message with a regular
expression, and looks for key names anywhere in the error body (`has`), spelled any way: Azure's
`innererror`, `inner_error` and `content_filter_result(s)` are one name each once case, `_` and `-` are
ignored. Everything is compiled at start-up; matching an error costs a few set lookups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace

from engine.rules import Expression, compile_expression
from engine.spec.models import ErrorMatch, ErrorRule
from engine.spec.names import ERROR_FIELDS, ERROR_NAMES
from engine.wires.base import UpstreamError, key_name


def _folded(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.lower() for v in values)


@dataclass(frozen=True)
class CompiledMatch:
    status: frozenset[int]
    code: frozenset[str]
    type: frozenset[str]
    message: re.Pattern[str] | None
    has: frozenset[str]

    @classmethod
    def compile(cls, match: ErrorMatch) -> CompiledMatch:
        return cls(
            frozenset(match.status),
            _folded(match.code),
            _folded(match.type),
            re.compile(match.message) if match.message is not None else None,
            frozenset(key_name(k) for k in match.has),
        )

    def holds(self, status: int, error: UpstreamError) -> bool:
        return (
            (not self.status or status in self.status)
            and (not self.code or (error.code or "").lower() in self.code)
            and (not self.type or (error.type or "").lower() in self.type)
            and (self.message is None or self.message.search(error.message) is not None)
            and (not self.has or not self.has.isdisjoint(error.keys))
        )


@dataclass(frozen=True)
class CompiledErrorRule:
    rule: ErrorRule
    when: Expression | None
    matches: tuple[CompiledMatch, ...]

    @classmethod
    def compile(cls, rule: ErrorRule) -> CompiledErrorRule:
        when = compile_expression(rule.when, ERROR_NAMES) if rule.when else None
        return cls(rule, when, tuple(CompiledMatch.compile(m) for m in rule.match))

    def holds(self, status: int, error: UpstreamError, provider: str) -> bool:
        if self.matches and not any(m.holds(status, error) for m in self.matches):
            return False
        if self.when is None:
            return True
        # attributes, not a dict: in an expression `error.keys` on a dict is the dict's own `keys` method
        fields = SimpleNamespace(**{name: getattr(error, name) for name in ERROR_FIELDS})
        return self.when.holds(status=status, error=fields, provider=provider)


def compile_error_rules(rules: list[ErrorRule]) -> tuple[CompiledErrorRule, ...]:
    return tuple(CompiledErrorRule.compile(r) for r in rules)


def answering(rule: ErrorRule, shared: dict[str, ErrorRule]) -> ErrorRule:
    """The rule whose answer `rule` gives: itself, or the shared rule it names in `answer_as`."""
    return shared[rule.answer_as] if rule.answer_as is not None else rule
