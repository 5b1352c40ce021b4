"""Lower: the client's OpenAI-shaped request → the exact HTTP request the provider will receive.

Two steps, both data-driven: the provider's `[[mappings]]` adapt the request's fields to what the
provider accepts, then the selected wire codec reshapes it for its protocol. The URL is the base URL plus
the codec's path, or, for providers with `url_forms` (Azure's deployments), the model's rendered form.
`engine lower` prints the result of this module without sending it, and the snapshot tests pin it for
every provider spec.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import msgspec

from engine import carry
from engine.catalog import Candidate
from engine.jobs import Job, JobStore
from engine.mapping import apply_stage
from engine.schemas import rewrite_request
from engine.select import WireChoice
from engine.wires.base import JSON, AnswerKind, BodyKind, Call


@dataclass(frozen=True)
class Context:
    """What preparing a request needs besides its body and candidate: the gateway's settings, its job
    store, and for an operation resolved by a job id, the job."""

    strip: frozenset[str] = frozenset()
    jobs: JobStore | None = None
    job: Job | None = None


@dataclass
class UpstreamRequest:
    """The exact request a provider receives, and what answer to expect from it."""

    method: str
    url: str
    headers: dict[str, str]
    body: Any  # a JSON object, a `Multipart` form or None, as `body_kind` says
    call: Call
    choice: WireChoice
    candidate: Candidate
    body_kind: BodyKind = "json"
    answer: AnswerKind = "json"
    # An operation's own bookkeeping once the upstream has answered with success, before anything is
    # metered or sent: called with the raised JSON answer (None for bytes) and the caller's key id. A video
    # job is stored or updated here, and `call.usage` set only on the one call that meters it.
    settle: Callable[[Call, JSON | None, str], Awaitable[None]] | None = None
    _sent: bytes | None = field(default=None, init=False, repr=False)

    def json_bytes(self) -> bytes:
        """The JSON body as sent, encoded once (a retry sends the same bytes). The lowered object is let go of
        then: a request waiting on its upstream, seconds for a model, holds its body once, as these bytes.
        (`engine lower` and the snapshots read `body` itself, before anything is sent.)"""
        if self._sent is None:
            self._sent = msgspec.json.encode(self.body)
            self.body = None
        return self._sent

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
    plan = candidate.plan(operation)
    if codec.accepts != "responses" and plan.request_stage:  # written against OpenAI's chat and media shapes
        apply_stage(plan.request_stage, "request", body, names)
    schema_rules = candidate.provider.spec.schemas
    if schema_rules is not None and codec.accepts in ("chat", "responses"):  # engine.schemas
        rewrite_request(body, schema_rules, codec.accepts)

    stream = request.get("stream") is True
    options = request.get("stream_options")
    call = Call(
        public_model=candidate.public_id,
        upstream_model=candidate.row.upstream,
        stream=stream,
        include_usage=stream and isinstance(options, dict) and options.get("include_usage") is True,
        carried=unpacked.carried,
        row=candidate.row,
        finish_reasons=candidate.provider.spec.finish_reasons,
        created=int(time.time()),
    )
    lowered = codec.lower(body, call)
    kind = lowered.body_kind
    if kind == "json" and plan.wire_stage:
        apply_stage(plan.wire_stage, "wire", lowered.body, {**names, "request": lowered.body})
    answer = lowered.answer or ("sse" if stream else "json")

    provider = candidate.provider
    url = candidate.urls[codec.shape] if candidate.urls is not None else provider.base_url + lowered.path
    if lowered.query:
        url += ("&" if "?" in url else "?") + urlencode(lowered.query)
    accept = _ACCEPT[answer]
    if kind == "multipart":  # its own boundary; its length is known up front: no chunked upload needed
        headers = {"content-type": lowered.body.content_type, **provider.request_headers(None, accept)}
        headers["content-length"] = str(lowered.body.content_length)
    else:
        headers = provider.request_headers("application/json" if kind == "json" else None, accept)
    return UpstreamRequest(lowered.method, url, headers, lowered.body, call, choice, candidate, kind, answer)


_ACCEPT: dict[str, str] = {"json": "application/json", "sse": "text/event-stream", "bytes": "*/*"}
