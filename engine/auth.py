"""Auth: the caller presents a gateway key as `Authorization: Bearer <key>`.

Every failure is the same OpenAI-shaped 401, so a caller learns nothing about which keys exist.
"""

from __future__ import annotations

from engine.errors import GatewayError
from engine.store import KeyRecord, Store


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(
        401,
        message,
        type="invalid_request_error",
        code="invalid_api_key",
        headers={"www-authenticate": 'Bearer realm="gateway"'},
    )


def authenticate(authorization: str | None, store: Store, prefix: str) -> KeyRecord:
    if not authorization:
        raise _unauthorized(
            "You didn't provide an API key. Send your gateway key in the Authorization header "
            "as `Authorization: Bearer <key>`."
        )
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("The Authorization header must be `Bearer <key>` with a gateway key.")
    record = store.verify(key.strip(), prefix)
    if record is None:
        raise _unauthorized(
            f"Incorrect API key provided. Gateway keys start with `{prefix}`; ask the gateway operator for a valid one."
        )
    return record
