"""Select wire: which codec carries this request, decided by the provider spec's `[[wire_rules]]`.

Rules are read in order and the first that holds wins; with none, the provider's default wire is used.
Rules see the client's request as sent (before mappings) and the model's catalog row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.catalog import Candidate
from engine.wires.base import Wire, codec_for


@dataclass(frozen=True)
class WireChoice:
    wire: Wire  # the codec: the selected wire, or its native passthrough when the client speaks it already
    reason: str  # for `engine lower` and logs: which rule fired, or that the default applied


def select_wire(candidate: Candidate, request: dict[str, Any], operation: str, shape: str = "chat") -> WireChoice:
    """`shape` is the API the operation's clients speak (its row in `operations.OPERATIONS` names it); the
    canonical chat shape unless told."""
    for index, rule in candidate.plan(operation).wire_rules:
        if rule.when is None or rule.when.holds(request=request, model=candidate.view, operation=operation):
            return WireChoice(codec_for(rule.wire, shape), f"wire_rules[{index}]: {rule.why}")
    provider = candidate.provider
    return WireChoice(codec_for(provider.wire, shape), f"provider.wire default of {provider.id}")
