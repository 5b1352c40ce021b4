"""Multipart bodies, both ways, never held whole in memory.

In: `read_form` parses a client's `multipart/form-data` body as it streams in. Text fields are kept (they
are small and bounded); each file part is spooled to a temporary file (in memory up to `SPOOL_IN_MEMORY`,
on disk past it). The route's size limit is checked against `Content-Length` before a byte is read, and
against the bytes counted while reading, so a too-large upload is a 413 before it is read whole.

Out: `Multipart` is the form a codec sends upstream: its fields, then its files, streamed from their spools
in chunks, with a `Content-Length` computed up front (providers need not accept chunked uploads). It can be
streamed more than once, so a fallback provider gets the same upload.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from engine.errors import GatewayError, invalid_request

if TYPE_CHECKING:
    from litestar import Request
    from python_multipart.multipart import MultipartCallbacks

SPOOL_IN_MEMORY = 1024 * 1024  # a file part past this size goes to disk
MAX_FIELD_BYTES = 256 * 1024  # a text field (a prompt, say) past this is refused
CHUNK = 256 * 1024


@dataclass
class UploadedFile:
    """One file part of a client's form, spooled; `size` bytes from the start of `spool`."""

    filename: str
    content_type: str
    size: int
    spool: IO[bytes]

    def close(self) -> None:
        self.spool.close()

    def shown(self) -> dict[str, Any]:
        return {"filename": self.filename, "content_type": self.content_type, "size": self.size}


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"The request body is larger than this endpoint accepts ({limit // (1024 * 1024)} MiB). Send a smaller file.",
        code="request_too_large",
    )


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    content_type: str = "application/octet-stream"
    text: bytearray = field(default_factory=bytearray)
    file: UploadedFile | None = None


class _FormBuilder:
    """python-multipart's callbacks, collecting fields and spooling files."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.files: list[UploadedFile] = []
        self._part = _Part()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self.problem: GatewayError | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._part = _Part()
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[self._header_name.decode("latin-1").lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        part = self._part
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is not None:
            part.filename = filename.decode("utf-8", "replace")
            part.content_type = self._headers.get("content-type", b"application/octet-stream").decode("latin-1")
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (closed with the form)
            part.file = UploadedFile(part.filename, part.content_type, 0, spool)
            self.files.append(part.file)

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.file is not None:
            part.file.spool.write(data[start:end])
            part.file.size += end - start
        elif len(part.text) + end - start > MAX_FIELD_BYTES:
            self.problem = invalid_request(f"The form field '{part.name}' is too long.", param=part.name)
        else:
            part.text.extend(data[start:end])

    def _end(self) -> None:
        part = self._part
        value: Any = part.file if part.file is not None else part.text.decode("utf-8", "replace")
        if part.file is not None:
            part.file.spool.seek(0)
        name = part.name
        if name.endswith("[]"):  # OpenAI's SDKs send arrays as repeated `name[]` parts
            self.fields.setdefault(name[:-2], []).append(value)
        elif name in self.fields:
            previous = self.fields[name]
            self.fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            self.fields[name] = value


async def read_form(request: Request[Any, Any, Any], limit: int) -> dict[str, Any]:
    """The client's form as a dict: text fields as strings (repeated ones as lists), files as `UploadedFile`.
    The caller closes the files (`close_form`)."""
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise GatewayError(
            415,
            "This endpoint takes `multipart/form-data` (with a boundary); send the file as a form upload.",
            code="unsupported_media_type",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)  # before a byte of the body is read
    builder = _FormBuilder()
    parser = MultipartParser(boundary, builder.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(limit)
            parser.write(chunk)
            if builder.problem is not None:
                raise builder.problem
        parser.finalize()
    except MultipartParseError:
        close_form(builder.fields)
        raise invalid_request("The multipart body could not be parsed; check its boundary and parts.") from None
    except BaseException:
        close_form(builder.fields)
        for upload in builder.files:
            upload.close()
        raise
    return builder.fields


def close_form(fields: dict[str, Any]) -> None:
    for value in fields.values():
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, UploadedFile):
                item.close()


class Multipart:
    """A form to send upstream: (name, value) pairs whose values are strings or spooled files."""

    def __init__(self, parts: list[tuple[str, str | UploadedFile]]) -> None:
        self.parts = parts
        self.boundary = f"compose-{secrets.token_hex(16)}"
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self._heads = [self._head(name, value) for name, value in parts]
        tail = len(f"--{self.boundary}--\r\n")
        self.content_length = tail + sum(
            len(head) + (value.size if isinstance(value, UploadedFile) else len(value.encode())) + 2
            for head, (_, value) in zip(self._heads, parts, strict=True)
        )

    @classmethod
    def of(cls, body: dict[str, Any]) -> Multipart:
        """A form from a lowered body: lists become repeated `name[]` parts, as OpenAI's SDKs send them."""
        parts: list[tuple[str, str | UploadedFile]] = []
        for name, value in body.items():
            if isinstance(value, list):
                parts += [(f"{name}[]", _text(item)) for item in value]
            elif value is not None:
                parts.append((name, _text(value)))
        return cls(parts)

    def _head(self, name: str, value: str | UploadedFile) -> bytes:
        disposition = f'form-data; name="{_quote(name)}"'
        if isinstance(value, UploadedFile):
            disposition += f'; filename="{_quote(value.filename)}"'
            disposition += f"\r\nContent-Type: {value.content_type}"
        return f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()

    async def stream(self) -> AsyncIterator[bytes]:
        for head, (_, value) in zip(self._heads, self.parts, strict=True):
            if isinstance(value, UploadedFile):
                yield head
                value.spool.seek(0)
                left = value.size
                while left > 0:
                    chunk = value.spool.read(min(CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    yield chunk
                yield b"\r\n"
            else:
                yield head + value.encode() + b"\r\n"
        yield f"--{self.boundary}--\r\n".encode()

    def shown(self) -> dict[str, Any]:
        """For `engine lower` and the snapshots: the parts in order, files by name, type and size."""
        return {
            "content_length": self.content_length,
            "parts": [[name, v.shown() if isinstance(v, UploadedFile) else v] for name, v in self.parts],
        }


def _text(value: Any) -> str | UploadedFile:
    if isinstance(value, UploadedFile | str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
