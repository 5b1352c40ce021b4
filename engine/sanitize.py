"""Sanitize: turn an upstream error into the error the client may see.

Order: the provider's `error_rules`, then the routes' `error_rules`; the first rule that holds decides
status, type, code, param and message. An error that arrived without an HTTP status of its own (inside a
200 answer or a stream) is matched with the status the codec gave it, or the one its type implies.
Whatever text survives is redacted: the provider key (and any key-shaped token matching
`routes.sanitize.redact_patterns`) and the upstream base URL never reach a client. Response headers are
untouched by this step, so diagnostics stay.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.catalog import Provider
from engine.error_rules import CompiledErrorRule, answering
from engine.errors import GatewayError, default_type, status_of
from engine.spec.models import ErrorRule
from engine.wires.base import UpstreamError

REDACTED = "[redacted]"


@dataclass(frozen=True)
class Sanitizer:
    provider: Provider
    rules: tuple[CompiledErrorRule, ...]
    redact: re.Pattern[str]
    shared: dict[str, ErrorRule]  # the routes' rules by name, for `answer_as`

    @classmethod
    def build(cls, provider: Provider, shared_rules: Sequence[CompiledErrorRule], patterns: Sequence[str]) -> Sanitizer:
        literals = [provider.base_url, *([provider.api_key] if provider.api_key else [])]
        alternatives = [re.escape(s) for s in literals] + [f"(?:{p})" for p in patterns]
        named = {c.rule.name: c.rule for c in shared_rules}
        return cls(provider, (*provider.error_rules, *shared_rules), re.compile("|".join(alternatives)), named)

    def scrub(self, text: str) -> str:
        return self.redact.sub(REDACTED, text)

    def __call__(self, status: int | None, upstream: UpstreamError) -> GatewayError:
        """`status`: the upstream's HTTP error status, or None for an error reported in a 200 answer or stream."""
        return self.explain(status, upstream)[0]

    def explain(self, status: int | None, upstream: UpstreamError) -> tuple[GatewayError, str | None]:
        """The client's error, and the name of the rule that decided it (None: the safe default)."""
        if status is None or status < 400:
            status = upstream.status or status_of(upstream.code, upstream.type)
        for compiled in self.rules:
            if compiled.holds(status, upstream, self.provider.id):
                rule = answering(compiled.rule, self.shared)
                status = rule.status or status
                error = GatewayError(
                    status,
                    rule.message or self._message(upstream, status),
                    type=rule.type or upstream.type or default_type(status),
                    code=rule.code or upstream.code,
                    param=rule.param or upstream.param,
                )
                return error, compiled.rule.name  # the rule that matched (it may answer as a shared one)
        error = GatewayError(
            status,
            self._message(upstream, status),
            type=upstream.type or default_type(status),
            code=upstream.code,
            param=upstream.param,
        )
        return error, None

    def _message(self, upstream: UpstreamError, status: int) -> str:
        if upstream.message:
            return self.scrub(upstream.message)
        return f"The upstream provider answered HTTP {status} without an error message."
