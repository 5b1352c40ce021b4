"""Lower: the client's OpenAI-shaped request → the exact HTTP request the provider will receive.

Two steps, both data-driven: the provider's `[[mappings]]` adapt the request's fields to what the
provider accepts, then the selected wire codec reshapes it for its protocol. `engine lower` prints the
result of this module without sending it, and the snapshot tests pin it for every provider spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from engine import carry
from engine.catalog import Candidate
from engine.mapping import apply_stage
from engine.select import WireChoice
from engine.wires.base import Call


@dataclass(frozen=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    call: Call
    choice: WireChoice
    candidate: Candidate

    def redacted_headers(self) -> dict[str, str]:
        return {**self.headers, **self.candidate.provider.auth_headers(redacted=True)}


def lower_request(
    candidate: Candidate,
    request: dict[str, Any],
    choice: WireChoice,
    operation: str,
    strip_fields: frozenset[str] = frozenset(),
) -> UpstreamRequest:
    """`request` is not modified; the body is a copy that mappings and the codec may reshape freely."""
    body = {k: v for k, v in request.items() if k not in strip_fields}
    names = {"request": body, "model": candidate.view, "operation": operation}
    codec = choice.wire
    # Packed tool-call ids (engine.carry) never reach a provider: the codec's own family's state is
    # handed to it in `call.carried`, any other family's is stripped.
    unpack = carry.unpack_chat if codec.accepts == "chat" else carry.unpack_responses
    unpacked = unpack(body, getattr(codec, "carrier", None))
    mappings = candidate.plan(operation).mappings
    if codec.accepts == "chat":  # request-stage mappings are written against the chat shape
        apply_stage(mappings, "request", body, names)

    stream = request.get("stream") is True
    options = request.get("stream_options")
    call = Call(
        public_model=candidate.public_id,
        upstream_model=candidate.row.upstream,
        stream=stream,
        include_usage=stream and isinstance(options, dict) and options.get("include_usage") is True,
        carried=unpacked.carried,
    )
    lowered = codec.lower(body, call)
    apply_stage(mappings, "wire", lowered.body, {**names, "request": lowered.body})

    provider = candidate.provider
    url = provider.base_url + lowered.path
    if lowered.query:
        url += "?" + urlencode(lowered.query)
    headers = {
        "content-type": "application/json",
        "accept": "text/event-stream" if stream else "application/json",
        **provider.spec.headers,
        **provider.auth_headers(),
    }
    return UpstreamRequest("POST", url, headers, lowered.body, call, choice, candidate)
