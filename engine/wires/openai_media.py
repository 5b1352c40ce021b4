"""OpenAI's media endpoints, spoken as they are: embeddings, images, speech, transcriptions and video jobs.

The client already speaks the provider's wire, so each codec is a passthrough that names the upstream
model, says what body and answer to expect, and reads usage in the units the endpoint is billed in
(tokens, images, characters, audio seconds, video seconds). Every OpenAI-compatible provider reaches them
through `OpenAIChatWire.siblings`, keyed by the client shape of the operation (`operations.OPERATIONS`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import msgspec

from engine.multipart import Multipart, UploadedFile
from engine.wires.base import (
    JSON,
    AnswerKind,
    Call,
    Lowered,
    StreamBroken,
    StreamItem,
    UpstreamError,
    Usage,
    Wire,
    error_from_doc,
    event_object,
    openai_error_of,
)
from engine.wires.sse import Event

_decode = msgspec.json.decode


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return 0.0
    return 0.0


def tokens_usage(usage: Any) -> Usage:
    """Both of OpenAI's token-usage spellings: `prompt_tokens` (embeddings) and `input_tokens` (images, audio)."""
    if not isinstance(usage, dict):
        return Usage()
    prompt = _int(usage.get("prompt_tokens")) or _int(usage.get("input_tokens"))
    completion = _int(usage.get("completion_tokens")) or _int(usage.get("output_tokens"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_int(usage.get("total_tokens")) or prompt + completion,
    )


class _Passthrough:
    """What every media codec shares: the OpenAI error shape, and SSE events relayed as they come."""

    name: str
    shape: str
    accepts: str
    done_suffix = ".done"  # the type of the event that ends a media stream (`speech.audio.done`, ...)

    def raise_json(self, doc: JSON, call: Call) -> JSON | UpstreamError:
        call.usage = self.usage_of(doc, call)
        return doc

    def usage_of(self, doc: JSON, call: Call) -> Usage | None:
        return tokens_usage(doc.get("usage")) if "usage" in doc else call.usage

    async def raise_stream(self, events: AsyncIterator[Event], call: Call) -> AsyncIterator[StreamItem | UpstreamError]:
        async for event in events:
            doc = event_object(event.data)
            kind = str(doc.get("type", ""))
            if "error" in doc or kind == "error":
                yield error_from_doc(doc)
                return
            yield event.data
            if kind.endswith(self.done_suffix):
                call.usage = self.usage_of(doc, call)
                return
        raise StreamBroken(f"upstream stream ended without its `*{self.done_suffix}` event")

    def error_of(self, body: bytes) -> UpstreamError:
        return openai_error_of(body)


class OpenAIEmbeddings(_Passthrough):
    """`POST /embeddings`: float or base64 vectors pass through untouched; usage is prompt tokens."""

    name = shape = accepts = "embeddings"

    def lower(self, body: JSON, call: Call) -> Lowered:
        body["model"] = call.upstream_model
        return Lowered("/embeddings", body)


class OpenAIImages(_Passthrough):
    """`POST /images/generations`: `b64_json` or `url` items; metered per image, and by tokens where the
    model reports them (GPT image models)."""

    name = shape = accepts = "images"
    done_suffix = ".completed"  # `image_generation.completed` ends a streamed generation

    def lower(self, body: JSON, call: Call) -> Lowered:
        body["model"] = call.upstream_model
        return Lowered("/images/generations", body, answer="sse" if body.get("stream") is True else "json")

    def usage_of(self, doc: JSON, call: Call) -> Usage | None:
        usage = tokens_usage(doc.get("usage"))
        data = doc.get("data")
        usage.images = len(data) if isinstance(data, list) else (1 if doc.get("b64_json") else 0)
        return usage


class OpenAISpeech(_Passthrough):
    """`POST /audio/speech`: JSON in, audio bytes out (or SSE with `stream_format: "sse"`). Metered by the
    characters of `input`, known before the answer."""

    name = shape = accepts = "speech"

    def lower(self, body: JSON, call: Call) -> Lowered:
        body["model"] = call.upstream_model
        text = body.get("input")
        call.usage = Usage(characters=len(text) if isinstance(text, str) else 0)
        answer: AnswerKind = "sse" if body.get("stream_format") == "sse" else "bytes"
        return Lowered("/audio/speech", body, answer=answer)

    def usage_of(self, doc: JSON, call: Call) -> Usage | None:
        usage = call.usage or Usage()
        if isinstance(doc.get("usage"), dict):
            tokens = tokens_usage(doc["usage"])
            usage.prompt_tokens, usage.completion_tokens = tokens.prompt_tokens, tokens.completion_tokens
            usage.total_tokens = tokens.total_tokens
        return usage


# Transcription formats that are not JSON, answered as the upstream's bytes (text/plain, text/vtt, ...).
TEXT_FORMATS = frozenset({"text", "srt", "vtt"})


class OpenAITranscriptions(_Passthrough):
    """`POST /audio/transcriptions`: the client's form forwarded as a form (its file streamed from the spool).
    json/verbose_json answers are raised for usage (tokens, or the audio's duration); text, srt and vtt are
    relayed as bytes; `stream=true` is relayed as SSE."""

    name = shape = accepts = "transcriptions"

    def lower(self, body: JSON, call: Call) -> Lowered:
        body["model"] = call.upstream_model
        answer: AnswerKind = "json"
        if str(body.get("stream", "")).lower() == "true":
            answer = "sse"
        elif body.get("response_format") in TEXT_FORMATS:
            answer = "bytes"
        return Lowered("/audio/transcriptions", Multipart.of(body), body_kind="multipart", answer=answer)

    def usage_of(self, doc: JSON, call: Call) -> Usage | None:
        usage = doc.get("usage")
        if isinstance(usage, dict) and usage.get("type") == "duration":
            return Usage(audio_seconds=_number(usage.get("seconds")))
        if isinstance(usage, dict):
            return tokens_usage(usage)
        if "duration" in doc:  # verbose_json of whisper-1
            return Usage(audio_seconds=_number(doc.get("duration")))
        return None


class OpenAIVideos(_Passthrough):
    """`POST /videos`: a job is created upstream and answered at once. JSON unless the client uploaded an
    `input_reference` file, which goes as a form."""

    name = shape = accepts = "videos"

    def lower(self, body: JSON, call: Call) -> Lowered:
        body["model"] = call.upstream_model
        if any(isinstance(v, UploadedFile) for v in body.values()):
            return Lowered("/videos", Multipart.of(body), body_kind="multipart")
        return Lowered("/videos", body)

    def usage_of(self, doc: JSON, call: Call) -> Usage | None:
        return video_usage(doc)


def video_seconds(doc: JSON) -> float:
    """The job's length: OpenAI spells `seconds` as a string ("8")."""
    return _number(doc.get("seconds"))


def video_usage(doc: JSON) -> Usage | None:
    """A finished job's seconds of video; nothing before it has finished."""
    if doc.get("status") != "completed":
        return None
    return Usage(video_seconds=video_seconds(doc))


class OpenAIVideoStatus(_Passthrough):
    """`GET /videos/{id}`: the job's state, by the upstream's id (the gateway maps its own id to it)."""

    name = shape = accepts = "videos.retrieve"

    def lower(self, body: JSON, call: Call) -> Lowered:
        return Lowered(f"/videos/{quote(str(body['video_id']), safe='')}", None, method="GET", body_kind="none")

    def usage_of(self, doc: JSON, call: Call) -> Usage | None:
        return video_usage(doc)


class OpenAIVideoContent(_Passthrough):
    """`GET /videos/{id}/content`: the finished video (or its thumbnail or spritesheet), relayed as bytes."""

    name = shape = accepts = "videos.content"

    def lower(self, body: JSON, call: Call) -> Lowered:
        query = {"variant": str(body["variant"])} if body.get("variant") else {}
        path = f"/videos/{quote(str(body['video_id']), safe='')}/content"
        return Lowered(path, None, query=query, method="GET", body_kind="none", answer="bytes")


OPENAI_MEDIA: dict[str, Wire] = {
    codec.shape: codec
    for codec in (
        OpenAIEmbeddings(),
        OpenAIImages(),
        OpenAISpeech(),
        OpenAITranscriptions(),
        OpenAIVideos(),
        OpenAIVideoStatus(),
        OpenAIVideoContent(),
    )
}
