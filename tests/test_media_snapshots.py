"""The media operations' wire, pinned: every model serving a media operation crossed with that operation's
canonical requests (tests/requests/<operation>/), and each media codec's recorded answers
(tests/responses/openai_media/<client shape>/) raised with what they meter.

Multipart requests are written as JSON: a file part is `{"filename", "content_type", "size"}` and becomes
a spooled upload of that many bytes; the lowered form shows its parts in order and its exact length. Job
operations (poll, download) lower against a stored job, so the snapshot shows the upstream id they use.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import io
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.catalog import Candidate, Catalog
from engine.errors import GatewayError
from engine.jobs import Job
from engine.lower import Context, UpstreamRequest
from engine.multipart import Multipart, UploadedFile
from engine.operations import OPERATIONS
from engine.spec.loader import load_specs
from engine.wires.base import Call, StreamBroken, UpstreamError, Wire
from engine.wires.gemini import GeminiWire
from engine.wires.openai_media import OPENAI_MEDIA
from engine.wires.sse import iter_events
from tests.conftest import REQUESTS, SPECS, load_corpus

SHIPPED = load_specs(SPECS)
CATALOG = Catalog.from_specs(SHIPPED, env={})
STRIP = frozenset(SHIPPED.routes.sanitize.strip_fields)
RESPONSES = Path(__file__).parent / "responses"
MEDIA = [name for name, row in OPERATIONS.items() if row.shape in OPENAI_MEDIA]
JOB = Job("video_gw0001", "key0001", "openai/sora-2", "openai", "video_up0001", "in_progress", 4.0, 1760000000)


def served(operation: str) -> list[Candidate]:
    return [
        c
        for public_id in sorted(CATALOG.public_ids())
        for c in CATALOG.all_candidates(public_id)
        if public_id in c.provider.spec.models and operation in c.serves
    ]


CASES = [(operation, c) for operation in MEDIA for c in (served(operation) or served("videos.generations"))]


def with_files(request: dict[str, Any]) -> dict[str, Any]:
    """A corpus request as the gateway holds it: file parts as spooled uploads of their declared size."""
    return {
        k: UploadedFile(v["filename"], v["content_type"], v["size"], io.BytesIO(b"\0" * v["size"]))
        if isinstance(v, dict) and "size" in v
        else v
        for k, v in request.items()
    }


def shown(upstream: UpstreamRequest) -> dict[str, Any]:
    body = upstream.body.shown() if isinstance(upstream.body, Multipart) else upstream.body
    headers = upstream.redacted_headers()
    if "content-type" in headers:  # the boundary is random per request
        headers["content-type"] = re.sub(r"boundary=\S+", "boundary=<boundary>", headers["content-type"])
    return {
        "method": upstream.method,
        "url": upstream.url,
        "headers": headers,
        "body_kind": upstream.body_kind,
        "answer": upstream.answer,
        "body": body,
    }


def lowered(operation: str, candidate: Candidate, request: dict[str, Any]) -> dict[str, Any]:
    row = OPERATIONS[operation]
    assert row.prepare is not None
    body = with_files({**request, "model": candidate.public_id} if row.resolve == "model" else request)
    original = copy.copy(body)
    try:
        if row.validate is not None:
            row.validate(body)
        upstream, _ = row.prepare(body, candidate, Context(STRIP, job=JOB))
    except GatewayError as error:
        return {"gateway_answers": error.status, **error.payload()}
    assert body == original, "lowering must not modify the client's request"
    assert upstream.answer in row.answers, f"{operation} lowered to an answer its row does not expect"
    return shown(upstream)


@pytest.mark.parametrize(
    ("operation", "candidate"),
    CASES,
    ids=[f"{op}--{c.provider.id}--{c.public_id.replace('/', '_')}" for op, c in CASES],
)
def test_media_requests_lowered(operation: str, candidate: Candidate, snapshot_json: Any) -> None:
    corpus = load_corpus(REQUESTS / operation)
    assert corpus, f"add canonical requests under tests/requests/{operation}/"
    assert {name: lowered(operation, candidate, r) for name, r in corpus.items()} == snapshot_json


# tests/responses/<family>_media/<client shape>/<answer>: each wire family's media codecs, by shape.
FAMILIES: dict[str, dict[str, Wire]] = {"openai_media": OPENAI_MEDIA, "gemini_media": GeminiWire.siblings}
ANSWERS = sorted(p for family in FAMILIES for p in (RESPONSES / family).glob("*/*") if p.suffix in (".json", ".sse"))


async def _raised_stream(codec: Wire, raw: bytes, call: Call) -> list[Any]:
    async def chunks() -> Any:
        yield raw

    items: list[Any] = []
    try:
        async for item in codec.raise_stream(iter_events(chunks()), call):
            items.append(msgspec.json.decode(item) if isinstance(item, bytes) else dataclasses.asdict(item))
    except StreamBroken as broken:
        items.append({"stream_broken": str(broken)})
    return items


def answer_id(path: Path) -> str:
    family = path.parent.parent.name.removesuffix("_media")
    return f"{path.parent.name}--{path.name}" if family == "openai" else f"{family}--{path.parent.name}--{path.name}"


@pytest.mark.parametrize("path", ANSWERS, ids=[answer_id(p) for p in ANSWERS])
def test_media_answers_raised(path: Path, snapshot_json: Any) -> None:
    codec, raw = FAMILIES[path.parent.parent.name][path.parent.name], path.read_bytes()
    call = Call(public_model="acme/model", upstream_model="model")
    if path.suffix == ".json":
        raised = codec.raise_json(msgspec.json.decode(raw), call)
        answer = {"upstream_error": dataclasses.asdict(raised)} if isinstance(raised, UpstreamError) else raised
    else:
        answer = asyncio.run(_raised_stream(codec, raw, call))
    assert {"answer": answer, "metered": call.usage.shown() if call.usage else None} == snapshot_json


def test_every_media_codec_has_recorded_answers() -> None:
    for family, codecs in FAMILIES.items():
        with_answers = {p.parent.name for p in ANSWERS if p.parent.parent.name == family}
        assert with_answers == set(codecs) - {"videos.content"}, f"add tests/responses/{family}/<shape>/"
