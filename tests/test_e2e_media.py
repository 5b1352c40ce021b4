"""The media endpoints end to end: `engine serve` against the loopback fake, driven by the official OpenAI
SDK's own calls. Embeddings (float and base64), images, speech streamed to a file, a transcription of a
real multipart upload, and a video job created, polled and downloaded; plus what must be refused: another
key's job (404) and an upload past the route's limit (413)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import struct
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.openai_media_fake import TRANSCRIPT, speech_bytes, srt, vector, vtt
from tests.servers import TRANSCRIPTION_LIMIT_MB

EMBEDDER = "openai/text-embedding-3-small"


def wav_file(path: Path, seconds: float = 0.5) -> Path:
    """A real (silent) 16 kHz mono WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * int(16000 * seconds))
    return path


def diagnostic(headers: Any, model: str) -> None:
    assert headers["x-compose-public-model"] == model
    assert headers["x-compose-upstream-provider"] == "openai"
    assert headers["x-compose-upstream-model"] == model.split("/", 1)[1]


def usage_of_key(gateway: Any, name: str, requests: int, timeout: float = 15.0) -> dict[str, Any]:
    """`engine usage` for one key, once the ledger holds `requests` rows for it (the gateway batches)."""
    deadline = time.monotonic() + timeout
    while True:
        report = gateway.engine("usage", "--json", "--key", name, "--by", "key")
        assert report.returncode == 0, report.stderr
        entries = json.loads(report.stdout)
        if (entries and entries[0]["requests"] >= requests) or time.monotonic() > deadline:
            assert entries, f"no usage for key {name!r}"
            return dict(entries[0])
        time.sleep(0.1)


def new_client(gateway: Any, name: str) -> openai.OpenAI:
    key = gateway.engine("keys", "create", "--name", name).stdout.strip().splitlines()[-1]
    return openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0, timeout=20)


# ------------------------------------------------------------------------------------------ embeddings


def test_embeddings_as_floats(client: openai.OpenAI, upstream: Any) -> None:
    raw = client.embeddings.with_raw_response.create(
        model=EMBEDDER, input=["hello world", "bye"], encoding_format="float"
    )
    diagnostic(raw.headers, EMBEDDER)
    result = raw.parse()
    assert [d.embedding for d in result.data] == [vector("hello world", 1536), vector("bye", 1536)]
    assert result.usage.prompt_tokens == 3 and result.usage.total_tokens == 3
    assert upstream.last_body() == {
        "model": "text-embedding-3-small",
        "input": ["hello world", "bye"],
        "encoding_format": "float",
    }


def test_embeddings_as_base64_which_the_sdk_asks_for_by_default(client: openai.OpenAI, upstream: Any) -> None:
    result = client.embeddings.create(model=EMBEDDER, input="hello world", dimensions=256)
    assert upstream.last_body()["encoding_format"] == "base64"  # the SDK's default, decoded on its side
    expected = vector("hello world", 256)
    assert len(result.data[0].embedding) == 256
    assert all(
        math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(result.data[0].embedding, expected, strict=True)
    )
    raw = httpx.post(
        f"{client.base_url}embeddings",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={"model": EMBEDDER, "input": "hello world", "encoding_format": "base64", "dimensions": 4},
    )
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert list(struct.unpack("<4f", packed)) == pytest.approx(vector("hello world", 4), rel=1e-6)


def test_dimensions_only_where_the_model_allows_them(client: openai.OpenAI, upstream: Any) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="openai/text-embedding-ada-002", input="hi", dimensions=256)
    assert refused.value.body["param"] == "dimensions" and refused.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.embeddings.create(model=EMBEDDER, input="hi", dimensions=4096)
    assert "at most 1536" in too_many.value.body["message"]
    assert upstream.requests() == [], "refused by the catalog, before any upstream call"


def test_a_chat_model_on_embeddings_is_a_400_naming_what_it_serves(client: openai.OpenAI, upstream: Any) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="openai/gpt-4.1", input="hi")
    assert refused.value.body["code"] == "unsupported_operation"
    assert "`chat.completions`, `responses`" in refused.value.body["message"]


def test_gemini_embeddings_over_batch_embed_contents(client: openai.OpenAI, gemini_fake: Any) -> None:
    """Gemini answers floats; the SDK asked base64 (its default), so the gateway packs them."""
    gemini_fake.reset()
    result = client.embeddings.create(model="google/gemini-embedding-001", input=["hello world", "bye"], dimensions=8)
    for got, text in zip(result.data, ["hello world", "bye"], strict=True):
        assert got.embedding == pytest.approx(vector(text, 8), rel=1e-6)
    [sent] = gemini_fake.requests()
    assert sent["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent["body"]["requests"][1] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "bye"}]},
        "outputDimensionality": 8,
    }
    floats = client.embeddings.create(model="google/gemini-embedding-001", input="hi", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vector("hi", 3072), rel=1e-6)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="google/gemini-embedding-001", input=[[1, 2, 3]])
    assert refused.value.body["param"] == "input"


# ---------------------------------------------------------------------------------------------- images


def test_images_generate_b64_json_and_url(client: openai.OpenAI, upstream: Any) -> None:
    image = client.images.generate(model="openai/gpt-image-1", prompt="a fox", size="1024x1024", quality="low", n=2)
    assert len(image.data) == 2 and base64.b64decode(image.data[0].b64_json or "").startswith(b"\x89PNG")
    assert image.usage is not None and image.usage.output_tokens == 2112
    assert upstream.last_body() == {
        "model": "gpt-image-1",
        "prompt": "a fox",
        "size": "1024x1024",
        "quality": "low",
        "n": 2,
    }
    url = client.images.generate(model="openai/dall-e-3", prompt="a fox", response_format="url")
    assert url.data[0].url == "https://images.example.test/fake.png"
    with pytest.raises(openai.BadRequestError) as refused:  # OpenAI's own refusal, relayed
        client.images.generate(model="openai/gpt-image-1", prompt="a fox", response_format="url")
    assert refused.value.body["param"] == "response_format"


# ----------------------------------------------------------------------------------------------- audio


def test_speech_streamed_to_a_file_has_the_upstream_bytes_and_type(
    client: openai.OpenAI, upstream: Any, tmp_path: Path
) -> None:
    text = "Hello from the gateway. " * 20
    with client.audio.speech.with_streaming_response.create(
        model="openai/tts-1", voice="alloy", input=text, response_format="wav", speed=1.25
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        diagnostic(response.headers, "openai/tts-1")
        response.stream_to_file(tmp_path / "speech.wav")
    assert (tmp_path / "speech.wav").read_bytes() == speech_bytes(text)
    assert upstream.last_body()["speed"] == 1.25


def test_speech_instructions_reach_the_model(client: openai.OpenAI, upstream: Any) -> None:
    audio = client.audio.speech.create(
        model="openai/gpt-4o-mini-tts", voice="coral", input="Hi", instructions="Cheerful."
    )
    assert audio.content == speech_bytes("Hi")
    assert upstream.last_body()["instructions"] == "Cheerful."


def test_transcription_of_a_real_multipart_upload(client: openai.OpenAI, upstream: Any, tmp_path: Path) -> None:
    path = wav_file(tmp_path / "hello.wav")
    with path.open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="openai/whisper-1",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["word"],
            language="en",
            temperature=0.2,
        )
    assert result.text == TRANSCRIPT and result.words and result.words[0].word == "The"
    received = upstream.last_body()
    assert received["file"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert received["file"]["filename"] == "hello.wav" and received["file"]["size"] == path.stat().st_size
    assert received["model"] == "whisper-1" and received["timestamp_granularities"] == ["word"]
    assert received["language"] == "en" and received["temperature"] == "0.2"


@pytest.mark.parametrize(
    ("response_format", "content_type", "body"),
    [
        ("json", "application/json", None),
        ("text", "text/plain", TRANSCRIPT + "\n"),
        ("srt", "text/plain", srt(TRANSCRIPT)),
        ("vtt", "text/vtt", vtt(TRANSCRIPT)),
    ],
)
def test_transcription_formats_keep_their_content_type(
    http: httpx.Client, upstream: Any, tmp_path: Path, response_format: str, content_type: str, body: str | None
) -> None:
    files = {"file": ("a.wav", wav_file(tmp_path / "a.wav").read_bytes(), "audio/wav")}
    data = {"model": "openai/gpt-4o-transcribe", "response_format": response_format}
    response = http.post("/external/v1/audio/transcriptions", data=data, files=files)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(content_type)
    if body is None:
        assert response.json()["text"] == TRANSCRIPT
    else:
        assert response.text == body


def test_an_upload_past_the_route_limit_is_a_413_before_it_reaches_the_provider(
    client: openai.OpenAI, upstream: Any
) -> None:
    big = io.BytesIO(b"\x00" * (TRANSCRIPTION_LIMIT_MB * 1024 * 1024 + 1))
    big.name = "long.wav"
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(model="openai/whisper-1", file=big)
    assert refused.value.status_code == 413
    assert (
        refused.value.body["code"] == "request_too_large"
        and f"{TRANSCRIPTION_LIMIT_MB} MiB" in refused.value.body["message"]
    )
    assert upstream.requests() == []


def test_a_bad_form_is_an_openai_shaped_400(http: httpx.Client, upstream: Any) -> None:
    response = http.post(
        "/external/v1/audio/transcriptions", data={"model": "openai/whisper-1"}, files={"x": ("a", b"1")}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"
    response = http.post("/external/v1/audio/transcriptions", json={"model": "openai/whisper-1"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"
    assert upstream.requests() == []


# ---------------------------------------------------------------------------------------------- videos
# The SDK warns that OpenAI's Sora API is being retired; the job pattern it defines is what is tested here.
SORA_RETIRING = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


@SORA_RETIRING
def test_video_job_create_poll_download_metered_once(gateway: Any, upstream: Any) -> None:
    client = new_client(gateway, "video-owner")
    video = client.videos.create(model="openai/sora-2", prompt="a fox in the snow", seconds="4")
    assert video.status == "queued" and video.id.startswith("video_")
    assert "video_up" not in video.id, "the client sees the gateway's job id, never the upstream's"
    assert video.model == "openai/sora-2"
    states = []
    while video.status != "completed":
        video = client.videos.retrieve(video.id)
        states.append(video.status)
    assert states == ["in_progress", "completed"]
    content = client.videos.download_content(video.id)
    upstream_id = next(r["path"] for r in upstream.requests() if r["method"] == "GET").split("/")[3]
    assert content.read() == speech_bytes(f"{upstream_id}/video", 300_000)
    assert client.videos.retrieve(video.id).status == "completed"  # polled again after it finished
    usage = usage_of_key(gateway, "video-owner", requests=5)  # create, 2 polls, download, poll: one row each
    assert usage["requests"] == 5
    assert usage["units"] == {"video_seconds": 4} and usage["cost_usd"] == pytest.approx(0.40), "metered once"


def test_the_documented_path_takes_json(http: httpx.Client, upstream: Any) -> None:
    response = http.post("/external/v1/videos/generations", json={"model": "openai/sora-2", "prompt": "rain"})
    assert response.status_code == 200 and response.json()["object"] == "video"
    assert upstream.last_body() == {"model": "sora-2", "prompt": "rain"}


@SORA_RETIRING
def test_another_keys_job_is_a_404(gateway: Any, client: openai.OpenAI, upstream: Any) -> None:
    video = client.videos.create(model="openai/sora-2", prompt="mine")
    stranger = new_client(gateway, "stranger")
    for call in (lambda: stranger.videos.retrieve(video.id), lambda: stranger.videos.download_content(video.id)):
        with pytest.raises(openai.NotFoundError) as hidden:
            call()
        assert hidden.value.body["code"] == "not_found"
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve("video_doesnotexist")
    assert [r["method"] for r in upstream.requests()] == ["POST"], "nothing of the stranger's reached upstream"
