"""Validate the media endpoints' requests against OpenAI's request schemas (as `validate.py` does for chat).

JSON bodies are checked strictly; multipart forms arrive as strings, so their models parse numbers and
booleans from text (`temperature=0.2`). As for chat, the validated objects are thrown away: what is
forwarded is the client's own request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from engine.errors import invalid_request
from engine.multipart import UploadedFile
from engine.validate import _validate as check


class JSONRequest(BaseModel):
    """A JSON request: strict types, unknown keys allowed (they pass through untouched). Media requests are
    small, so models (rather than chat's TypedDicts) cost nothing that matters."""

    model_config = ConfigDict(extra="allow", strict=True)


TokenList = Annotated[list[int], Field(min_length=1)]


class EmbeddingsRequest(JSONRequest):
    model: str = Field(min_length=1)
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=2048)]
        | TokenList
        | Annotated[list[TokenList], Field(min_length=1, max_length=2048)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class ImagesRequest(JSONRequest):
    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=32000)
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = None
    quality: Literal["auto", "high", "medium", "low", "hd", "standard"] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    moderation: Literal["low", "auto"] | None = None
    style: Literal["vivid", "natural"] | None = None
    stream: bool | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)


class VoiceId(JSONRequest):
    id: str


class SpeechRequest(JSONRequest):
    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=4096)
    voice: str | VoiceId
    instructions: str | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    stream_format: Literal["sse", "audio"] | None = None


class FormModel(BaseModel):
    """A multipart form: text parsed leniently (`"0.2"` is a number), files as spooled uploads."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)


class TranscriptionForm(FormModel):
    file: UploadedFile
    model: str = Field(min_length=1)
    language: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    timestamp_granularities: list[Literal["word", "segment"]] | None = None
    include: list[str] | None = None
    stream: bool | None = None


class VideoRequest(FormModel):
    """`POST /videos` as JSON or as a form (the OpenAI SDK sends a form, for the optional reference image)."""

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=32000)
    seconds: Literal["4", "8", "12"] | None = None
    size: Literal["720x1280", "1280x720", "1024x1792", "1792x1024"] | None = None
    input_reference: UploadedFile | None = None


class VideoContentQuery(FormModel):
    video_id: str
    variant: Literal["video", "thumbnail", "spritesheet"] | None = None


# Fields of OpenAI's requests that pass through unchecked (as `engine.validate.UNCHECKED`, for `engine check`).
UNCHECKED: dict[type, tuple[str, ...]] = {ImagesRequest: ("user",)}

_EMBEDDINGS = TypeAdapter(EmbeddingsRequest)
_IMAGES = TypeAdapter(ImagesRequest)
_SPEECH = TypeAdapter(SpeechRequest)
_TRANSCRIPTION = TypeAdapter(TranscriptionForm)
_VIDEO = TypeAdapter(VideoRequest)
_VIDEO_CONTENT = TypeAdapter(VideoContentQuery)


def validate_embeddings(body: dict[str, Any]) -> None:
    check(_EMBEDDINGS, body)


def validate_images(body: dict[str, Any]) -> None:
    check(_IMAGES, body)


def validate_speech(body: dict[str, Any]) -> None:
    check(_SPEECH, body)


def validate_transcription(form: dict[str, Any]) -> None:
    check(_TRANSCRIPTION, form)
    if form.get("timestamp_granularities") and form.get("response_format") != "verbose_json":
        raise invalid_request(
            "`timestamp_granularities` needs `response_format` `verbose_json`.", param="timestamp_granularities"
        )


def validate_video(body: dict[str, Any]) -> None:
    check(_VIDEO, body)


def validate_video_content(query: dict[str, Any]) -> None:
    check(_VIDEO_CONTENT, query)
