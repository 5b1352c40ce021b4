"""Prepare the media operations: the catalog's refusals, then select wire → lower, as for chat.

Each operation's codec is the provider wire's sibling for the operation's client shape (for every
OpenAI-compatible provider, `wires/openai_media.py`). Video jobs add bookkeeping around the upstream's
answers (`settle`): the job is stored under a gateway-issued id when created, its state is kept as it is
polled, and it is metered once, when it is first seen finished or first downloaded.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
import time
from collections.abc import Callable
from typing import Any

from engine.catalog import Candidate
from engine.errors import GatewayError
from engine.jobs import Job, JobStore, new_job_id
from engine.lower import Context, UpstreamRequest, lower_request
from engine.select import select_wire
from engine.shapes.base import Renderer
from engine.shapes.chat import EVENTS, ChatRenderer
from engine.wires.base import JSON, Call, Usage
from engine.wires.openai_media import video_seconds

Prepare = Callable[[dict[str, Any], Candidate, Context], tuple[UpstreamRequest, Renderer]]
Check = Callable[[dict[str, Any], Candidate], None]


def _unsupported(candidate: Candidate, message: str, param: str) -> GatewayError:
    return GatewayError(400, f"The model `{candidate.public_id}` {message}.", param=param, code="unsupported_parameter")


def check_dimensions(body: dict[str, Any], candidate: Candidate) -> None:
    """`dimensions` only where the model can shorten its vectors, and never past their length."""
    dimensions, row = body.get("dimensions"), candidate.row
    if dimensions is None:
        return
    if not row.adjustable_dimensions:
        raise _unsupported(
            candidate, "does not support `dimensions`; remove it, or pick a model that does", "dimensions"
        )
    if row.dimensions is not None and isinstance(dimensions, int) and dimensions > row.dimensions:
        raise _unsupported(candidate, f"makes vectors of at most {row.dimensions} dimensions", "dimensions")


class EmbeddingsRenderer(ChatRenderer):
    """Embeddings as the client asked for them: vectors a wire raised as floats (Gemini's) are packed as
    base64 (little-endian float32, as OpenAI encodes them) when the request said `encoding_format: base64`;
    vectors that already are base64 strings (OpenAI's) pass untouched."""

    def __init__(self) -> None:
        super().__init__(done=None)

    def json(self, doc: JSON, call: Call) -> JSON:
        for item in doc.get("data") or ():
            vector = item.get("embedding") if isinstance(item, dict) else None
            if isinstance(vector, list):
                item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return doc


BASE64_EMBEDDINGS = EmbeddingsRenderer()


def prepare_embeddings(body: dict[str, Any], candidate: Candidate, ctx: Context) -> tuple[UpstreamRequest, Renderer]:
    upstream, renderer = passthrough("embeddings", "embeddings", check_dimensions)(body, candidate, ctx)
    return upstream, BASE64_EMBEDDINGS if body.get("encoding_format") == "base64" else renderer


def passthrough(operation: str, shape: str, check: Check | None = None) -> Prepare:
    """The prepare step of an operation whose clients speak the codec's own shape."""

    def prepare(body: dict[str, Any], candidate: Candidate, ctx: Context) -> tuple[UpstreamRequest, Renderer]:
        if check is not None:
            check(body, candidate)
        choice = select_wire(candidate, body, operation, shape)
        return lower_request(candidate, body, choice, operation, ctx.strip), EVENTS

    return prepare


def _jobs(ctx: Context) -> JobStore:
    assert ctx.jobs is not None, "the gateway builds its context with a job store"
    return ctx.jobs


def prepare_video_create(body: dict[str, Any], candidate: Candidate, ctx: Context) -> tuple[UpstreamRequest, Renderer]:
    """Create the job upstream; answer it under a new gateway id, stored with the key that created it."""
    upstream, renderer = passthrough("videos.generations", "videos")(body, candidate, ctx)

    async def settle(call: Call, doc: JSON | None, key_id: str) -> None:
        assert doc is not None
        jobs = _jobs(ctx)
        job = Job(
            id=new_job_id(),
            key_id=key_id,
            public_model=candidate.public_id,
            provider=candidate.provider.id,
            upstream_id=str(doc.get("id", "")),
            status=str(doc.get("status", "queued")),
            seconds=video_seconds(doc),
            created_at=int(time.time()),
        )
        await jobs.create_job(job)
        _as_gateway_job(doc, job)
        await _meter_if_finished(jobs, job, call, doc)

    return dataclasses.replace(upstream, settle=settle), renderer


def _for_job(
    operation: str, body: dict[str, Any], candidate: Candidate, ctx: Context
) -> tuple[Job, UpstreamRequest, Renderer]:
    """Lower a request about the job the operation was resolved to, addressed by its upstream id."""
    job = ctx.job
    assert job is not None, "resolved by job"
    upstream, renderer = passthrough(operation, operation)({**body, "video_id": job.upstream_id}, candidate, ctx)
    return job, upstream, renderer


def prepare_video_status(body: dict[str, Any], candidate: Candidate, ctx: Context) -> tuple[UpstreamRequest, Renderer]:
    """Poll the job upstream by its upstream id; keep its state; meter it the first time it is finished."""
    job, upstream, renderer = _for_job("videos.retrieve", body, candidate, ctx)

    async def settle(call: Call, doc: JSON | None, key_id: str) -> None:
        assert doc is not None
        jobs = _jobs(ctx)
        status, seconds = str(doc.get("status", job.status)), video_seconds(doc) or job.seconds
        if (status, seconds) != (job.status, job.seconds):
            await jobs.update_job(job.id, status, seconds)
        _as_gateway_job(doc, job)
        await _meter_if_finished(jobs, job, call, doc)

    return dataclasses.replace(upstream, settle=settle), renderer


def prepare_video_content(body: dict[str, Any], candidate: Candidate, ctx: Context) -> tuple[UpstreamRequest, Renderer]:
    """Download the finished video; a job never seen finished before is metered here, once."""
    job, upstream, renderer = _for_job("videos.content", body, candidate, ctx)

    async def settle(call: Call, doc: JSON | None, key_id: str) -> None:
        await _meter_if_finished(_jobs(ctx), job, call, {"status": "completed", "seconds": job.seconds})

    return dataclasses.replace(upstream, settle=settle), renderer


def _as_gateway_job(doc: JSON, job: Job) -> None:
    """The upstream's job object, as the client must see it: the gateway's id, never the upstream's."""
    doc["id"] = job.id
    doc["model"] = job.public_model
    if doc.get("remixed_from_video_id"):
        doc["remixed_from_video_id"] = None  # an upstream id; remixes are not offered through the gateway


async def _meter_if_finished(jobs: JobStore, job: Job, call: Call, doc: JSON) -> None:
    """Usage only on the one call that claims the finished job; every other call meters no usage."""
    call.usage = None
    if doc.get("status") == "completed" and not job.metered and await jobs.claim_metering(job.id):
        call.usage = Usage(video_seconds=float(doc.get("seconds") or job.seconds))
