"""OpenAI-shaped errors: the only error body a client of the gateway ever sees.

Every failure, the gateway's own or an upstream's, ends as `GatewayError`, rendered as OpenAI's four-key
body `{"error": {"message", "type", "param", "code"}}`. Messages are written for the caller: they say
what to change, and never carry a provider key, an upstream address or a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import msgspec

DEFAULT_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def default_type(status: int) -> str:
    return DEFAULT_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


# The HTTP status an error stands for when it came without one (inside a stream, or a 200 answer):
# read from its `code`, then its `type`, in OpenAI's vocabulary (which OpenAI-compatible servers share).
_STATUS_OF_CODE = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "context_length_exceeded": 400,
    "content_filter": 400,
    "invalid_prompt": 400,
    "invalid_api_key": 401,
    "model_not_found": 404,
    "server_error": 500,
}
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "tokens": 429,
    "server_error": 500,
    "api_error": 500,
    "overloaded_error": 503,
}


def status_of(code: str | None, type: str | None) -> int:
    """The status of an error reported without one; an unknown kind is the upstream's failure (500)."""
    return _STATUS_OF_CODE.get(code or "") or _STATUS_OF_TYPE.get(type or "") or 500


class Kind(StrEnum):
    """How an upstream attempt failed. `engine.attempts` decides from this what runs next."""

    REFUSED = "refused"  # connection refused, or reset before the request was written
    CONNECT_TIMEOUT = "connect_timeout"
    POOL_TIMEOUT = "pool_timeout"  # no connection to this provider freed up in time
    FIRST_BYTE_TIMEOUT = "first_byte_timeout"  # sent, then no answer began in time
    IDLE_TIMEOUT = "idle_timeout"  # the answer began, then stalled between chunks
    TOTAL_TIMEOUT = "total_timeout"  # the attempt as a whole ran out of time
    DROPPED = "dropped"  # sent, then the connection failed before the answer was complete
    STATUS = "status"  # the upstream answered with an error (an error status, or an error as its answer)
    INVALID = "invalid"  # the upstream answered something that is not its protocol
    DEADLINE = "deadline"  # the client's own deadline left no time for (another) attempt


@dataclass(frozen=True)
class Failure:
    """What happened to one upstream attempt, as the attempt policy needs it (never shown to a client)."""

    kind: Kind
    sent: bool  # the request reached the provider, which may have done (and billed) the work
    status: int | None = None  # the status the upstream's error stands for, before error rules rewrote it
    code: str | None = None  # the upstream's own error code (`insufficient_quota`), before sanitizing
    retry_after: float | None = None  # seconds the upstream asked us to wait, from its headers


class GatewayError(Exception):
    """An error answer, ready to render."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or default_type(status)
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.failure: Failure | None = None  # set when an upstream attempt failed: the policy's input

    def payload(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return msgspec.json.encode(self.payload())


def upstream_failure(status: int, message: str, code: str, kind: Kind, *, sent: bool = True) -> GatewayError:
    """The upstream failed in transport or protocol (not with an error body of its own)."""
    error = GatewayError(status, message, type="api_error", code=code)
    error.failure = Failure(kind, sent)
    return error


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it. "
        "GET /models lists the models available to your key.",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def model_not_configured(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` is in this gateway's catalog, but no provider serving it is configured on this"
        " gateway. Ask the gateway operator to configure one, or pick another model: GET /models lists the"
        " models available to your key.",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def job_not_found(job_id: str) -> GatewayError:
    """Also the answer for another key's job: whether it exists is not the caller's to learn."""
    return GatewayError(
        404,
        f"No job found with id `{job_id}` for this key. Use the id the create call returned, with the same key.",
        param="video_id",
        code="not_found",
    )


def not_implemented(operation: str) -> GatewayError:
    return GatewayError(
        501,
        f"The `{operation}` operation is declared in this gateway's routes but not implemented yet: "
        "no wire codec serves it.",
        type="not_implemented_error",
        code="operation_not_implemented",
    )
