"""Select wire: which codec carries this request, decided by the provider spec's `[[wire_rules]]`.

Rules are read in order and the first that holds wins; with none, the provider's default wire is used.
Rules see the client's request as sent (before mappings) and the model's catalog row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.catalog import Candidate
from engine.errors import GatewayError
from engine.wires.base import NoCodec, Wire, codec_for


@dataclass(frozen=True)
class WireChoice:
    wire: Wire  # the codec: the selected wire, or its native passthrough when the client speaks it already
    reason: str  # for `engine lower` and logs: which rule fired, or that the default applied


def select_wire(candidate: Candidate, request: dict[str, Any], operation: str, shape: str = "chat") -> WireChoice:
    """`shape` is the API the operation's clients speak (its row in `operations.OPERATIONS` names it); the
    canonical chat shape unless told."""
    for index, rule in candidate.plan(operation).wire_rules:
        if rule.when is None or rule.when.holds(request=request, model=candidate.view, operation=operation):
            return WireChoice(_codec(rule.wire, shape, candidate, operation), f"wire_rules[{index}]: {rule.why}")
    provider = candidate.provider
    return WireChoice(_codec(provider.wire, shape, candidate, operation), f"provider.wire default of {provider.id}")


def _codec(wire: Wire, shape: str, candidate: Candidate, operation: str) -> Wire:
    try:
        return codec_for(wire, shape)
    except NoCodec:  # `engine check` refuses a model row listing such an operation; a fallback may serve it
        raise GatewayError(
            501,
            f"The provider `{candidate.provider.id}` has no codec for `{operation}` on its `{wire.name}` wire.",
            type="not_implemented_error",
            code="operation_not_implemented",
        ) from None
