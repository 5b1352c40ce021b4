"""OpenAI's media endpoints for the loopback fake: embeddings, images, speech, transcriptions, video jobs.

Answers are deterministic functions of the request (so a test can compute the expected bytes with the same
function), and the fake refuses what OpenAI refuses: `dimensions` on text-embedding-ada-002, `response_format`
on GPT image models, n > 1 on dall-e-3, speech input past 4,096 characters, uploads past 25 MB (413), audio
files of other formats, timestamp granularities without verbose_json, video seconds other than 4/8/12, and
a video's content before the job is done. Uploads are hashed as they stream in, never held whole, so the
fake can take the 50 MB uploads the memory measurement sends (`--max-upload-mb`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from typing import Any

from aiohttp import web

CREATED = 1760000000
AUDIO_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
NATIVE_DIMENSIONS = {"text-embedding-3-large": 3072}
PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()
CHUNK = 64 * 1024


def invalid(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> web.Response:
    doc = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(doc, status=status)


def vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for `text`."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [((seed[i % 32] + i) % 97) / 97.0 - 0.5 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def as_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def speech_bytes(text: str, size: int | None = None) -> bytes:
    """The audio the fake 'speaks' for `text`: `size` bytes (default 1,000 per character) of a pattern
    seeded by the text, so a test can recompute exactly what it should receive."""
    total = size if size is not None else 1000 * len(text)
    block = hashlib.sha256(text.encode()).digest() * (CHUNK // 32)
    return (block * (total // len(block) + 1))[:total]


def srt(text: str) -> str:
    return f"1\n00:00:00,000 --> 00:00:02,500\n{text}\n\n"


def vtt(text: str) -> str:
    return f"WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n{text}\n\n"


class MediaFake:
    """Routes for the media endpoints; `fake` is the chat fake, whose request log and script they share."""

    def __init__(self, fake: Any, max_upload_mb: int = 25) -> None:
        self.fake = fake
        self.max_upload = max_upload_mb * 1024 * 1024
        self.videos: dict[str, dict[str, Any]] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/images/generations", self.images)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/videos", self.video_create)
        app.router.add_get("/v1/videos/{video_id}", self.video_retrieve)
        app.router.add_get("/v1/videos/{video_id}/content", self.video_content)

    def _record(self, request: web.Request, body: Any) -> None:
        if self.fake.record:
            entry = {"method": request.method, "path": request.path, "headers": dict(request.headers), "body": body}
            self.fake.requests.append(entry)

    async def _json(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        self._record(request, body)
        return body

    async def _form(self, request: web.Request) -> dict[str, Any] | web.Response:
        """The form, with each file replaced by its name, type, size and SHA-256 (hashed as it streams)."""
        if not request.content_type.startswith("multipart/"):
            return invalid("Expected a multipart/form-data body.")
        form: dict[str, Any] = {}
        received = 0
        reader = await request.multipart()
        async for part in reader:
            if part.filename is None:
                value = (await part.read()).decode()
                if part.name and part.name.endswith("[]"):
                    form.setdefault(part.name[:-2], []).append(value)
                else:
                    form[part.name or ""] = value
                continue
            digest, size = hashlib.sha256(), 0
            while chunk := await part.read_chunk(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                received += len(chunk)
                if received > self.max_upload:
                    return invalid(
                        f"Maximum content size limit ({self.max_upload}) exceeded ({received} bytes read)",
                        status=413,
                    )
            form[part.name or ""] = {
                "filename": part.filename,
                "content_type": part.headers.get("Content-Type"),
                "size": size,
                "sha256": digest.hexdigest(),
            }
        self._record(request, form)
        return form

    # ------------------------------------------------------------------ embeddings, images

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if self.fake.script:
            return await self.fake._scripted(request, self.fake.script.popleft())
        model, inputs = str(body.get("model", "")), body.get("input")
        if not inputs:
            return invalid("'input' : input must be a string or an array of strings, and not empty.", "input")
        if body.get("dimensions") is not None and model == "text-embedding-ada-002":
            return invalid("This model does not support specifying dimensions.", "dimensions")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return invalid(f"Invalid value for 'encoding_format': {encoding!r}.", "encoding_format")
        texts = [inputs] if isinstance(inputs, str) else [str(i) for i in inputs]
        dimensions = body.get("dimensions") or NATIVE_DIMENSIONS.get(model, 1536)
        data = []
        for index, text in enumerate(texts):
            values = vector(text, dimensions)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": as_base64(values) if encoding == "base64" else values,
                }
            )
        tokens = sum(len(t.split()) for t in texts)
        return web.json_response(
            {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )

    async def images(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if self.fake.script:
            return await self.fake._scripted(request, self.fake.script.popleft())
        model = str(body.get("model", ""))
        if not body.get("prompt"):
            return invalid("Missing required parameter: 'prompt'.", "prompt")
        gpt_image = model.startswith("gpt-image")
        if gpt_image and "response_format" in body:
            return invalid("Unknown parameter: 'response_format'.", "response_format", "unknown_parameter")
        n = int(body.get("n") or 1)
        if model == "dall-e-3" and n != 1:
            return invalid("You must provide n=1 for this model.", "n")
        as_url = not gpt_image and body.get("response_format", "url") == "url"
        item = {"url": "https://images.example.test/fake.png"} if as_url else {"b64_json": PNG_1PX}
        doc: dict[str, Any] = {"created": CREATED, "data": [dict(item) for _ in range(n)]}
        if gpt_image:
            doc |= {
                "background": body.get("background", "opaque"),
                "output_format": body.get("output_format", "png"),
                "size": body.get("size", "1024x1024"),
                "quality": body.get("quality", "medium"),
                "usage": {
                    "input_tokens": 50,
                    "output_tokens": 1056 * n,
                    "total_tokens": 50 + 1056 * n,
                    "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
                },
            }
        else:
            doc["data"][0]["revised_prompt"] = f"A picture of {body['prompt']}"
        return web.json_response(doc)

    # ------------------------------------------------------------------ audio

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        step = self.fake.script.popleft() if self.fake.script else {}
        if "status" in step or "sse" in step:
            return await self.fake._scripted(request, step)
        text = body.get("input")
        if not isinstance(text, str) or not text:
            return invalid("Missing required parameter: 'input'.", "input")
        if len(text) > 4096:
            return invalid("'input' is too long: the maximum is 4096 characters.", "input", "string_above_max_length")
        if not body.get("voice"):
            return invalid("Missing required parameter: 'voice'.", "voice")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            return invalid("'speed' must be between 0.25 and 4.0.", "speed")
        audio_format = body.get("response_format", "mp3")
        if body.get("stream_format") == "sse":
            audio = base64.b64encode(speech_bytes(text)).decode()
            events = [{"type": "speech.audio.delta", "audio": audio[i : i + 4096]} for i in range(0, len(audio), 4096)]
            usage = {"input_tokens": len(text.split()), "output_tokens": len(audio) // 100, "total_tokens": 0}
            usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
            events.append({"type": "speech.audio.done", "usage": usage})
            return await self.fake._stream(request, [json.dumps(e) for e in events])
        audio_bytes = speech_bytes(text, step.get("bytes"))
        response = web.StreamResponse(headers={"Content-Type": SPEECH_TYPES.get(audio_format, "audio/mpeg")})
        response.enable_chunked_encoding()  # OpenAI streams speech as it is synthesized
        await response.prepare(request)
        for start in range(0, len(audio_bytes), CHUNK):
            await response.write(audio_bytes[start : start + CHUNK])
        await response.write_eof()
        return response

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request)
        if isinstance(form, web.Response):
            return form
        if self.fake.script:
            return await self.fake._scripted(request, self.fake.script.popleft())
        upload = form.get("file")
        if not isinstance(upload, dict):
            return invalid("Missing required parameter: 'file'.", "file")
        if not form.get("model"):
            return invalid("Missing required parameter: 'model'.", "model")
        extension = str(upload["filename"]).rsplit(".", 1)[-1].lower()
        if extension not in AUDIO_FORMATS:
            return invalid(f"Invalid file format. Supported formats: {list(AUDIO_FORMATS)}", "file")
        response_format = form.get("response_format", "json")
        if form.get("timestamp_granularities") and response_format != "verbose_json":
            return invalid("timestamp_granularities requires response_format=verbose_json", "timestamp_granularities")
        seconds = round(upload["size"] / 16000, 2)  # as if 16 kB per second of audio
        tokens = form.get("model") != "whisper-1"
        if str(form.get("stream", "")).lower() == "true":
            events = [{"type": "transcript.text.delta", "delta": w + " "} for w in TRANSCRIPT.split()]
            done: dict[str, Any] = {"type": "transcript.text.done", "text": TRANSCRIPT}
            done["usage"] = {"type": "tokens", "input_tokens": 40, "output_tokens": 10, "total_tokens": 50}
            return await self.fake._stream(request, [json.dumps(e) for e in [*events, done]])
        if response_format == "text":
            return web.Response(text=TRANSCRIPT + "\n", content_type="text/plain")
        if response_format == "srt":
            return web.Response(text=srt(TRANSCRIPT), content_type="text/plain")
        if response_format == "vtt":
            return web.Response(text=vtt(TRANSCRIPT), content_type="text/vtt")
        if response_format == "verbose_json":
            doc: dict[str, Any] = {
                "task": "transcribe",
                "language": form.get("language", "english"),
                "duration": seconds,
                "text": TRANSCRIPT,
                "segments": [{"id": 0, "start": 0.0, "end": seconds, "text": TRANSCRIPT}],
            }
            if "word" in (form.get("timestamp_granularities") or []):
                doc["words"] = [{"word": w, "start": 0.0, "end": 0.5} for w in TRANSCRIPT.split()]
            return web.json_response(doc)
        usage = (
            {"type": "tokens", "input_tokens": 40, "output_tokens": 10, "total_tokens": 50}
            if tokens
            else {"type": "duration", "seconds": seconds}
        )
        return web.json_response({"text": TRANSCRIPT, "usage": usage})

    # ------------------------------------------------------------------ video jobs

    async def video_create(self, request: web.Request) -> web.StreamResponse:
        if request.content_type.startswith("multipart/"):
            form = await self._form(request)
            if isinstance(form, web.Response):
                return form
            body = form
        else:
            body = await self._json(request)
        if self.fake.script:
            return await self.fake._scripted(request, self.fake.script.popleft())
        if not body.get("prompt"):
            return invalid("Missing required parameter: 'prompt'.", "prompt")
        seconds = body.get("seconds", "4")
        if seconds not in ("4", "8", "12"):
            return invalid(f"Invalid value: {seconds!r}. Supported values are: '4', '8', and '12'.", "seconds")
        video_id = f"video_up{len(self.videos) + 1:04d}"
        self.videos[video_id] = {
            "id": video_id,
            "object": "video",
            "model": body.get("model", "sora-2"),
            "status": "queued",
            "progress": 0,
            "created_at": CREATED,
            "completed_at": None,
            "expires_at": None,
            "prompt": body["prompt"],
            "size": body.get("size", "720x1280"),
            "seconds": seconds,
            "remixed_from_video_id": None,
            "error": None,
        }
        return web.json_response(self.videos[video_id])

    def _video(self, request: web.Request) -> dict[str, Any] | None:
        self._record(request, dict(request.query))
        return self.videos.get(request.match_info["video_id"])

    async def video_retrieve(self, request: web.Request) -> web.StreamResponse:
        video = self._video(request)
        if video is None:
            return invalid(f"Video with id '{request.match_info['video_id']}' not found.", "video_id", status=404)
        if video["status"] == "queued":  # every poll moves the job on: queued → in_progress → completed
            video |= {"status": "in_progress", "progress": 50}
        elif video["status"] == "in_progress":
            video |= {"status": "completed", "progress": 100, "completed_at": CREATED + 60}
        return web.json_response(video)

    async def video_content(self, request: web.Request) -> web.StreamResponse:
        video = self._video(request)
        if video is None:
            return invalid(f"Video with id '{request.match_info['video_id']}' not found.", "video_id", status=404)
        if video["status"] != "completed":
            return invalid("Video is not ready yet, use GET /v1/videos/{video_id} to check status.", "video_id")
        variant = request.query.get("variant", "video")
        content_type = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}.get(variant)
        if content_type is None:
            return invalid(f"Invalid value for 'variant': {variant!r}.", "variant")
        return web.Response(body=speech_bytes(f"{video['id']}/{variant}", 300_000), content_type=content_type)
