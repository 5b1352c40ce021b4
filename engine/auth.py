"""Auth: the caller presents a gateway key as `Authorization: Bearer <key>`.

Every failure is the same OpenAI-shaped 401, so a caller learns nothing about which keys exist.
Keys that verified are remembered for `gateway.key_cache_seconds` (routes.toml): a database lookup and
a SHA-256 per request were ~7% of the gateway's CPU. The price is that a revoked key keeps working for
at most that long, on every instance sharing the database. Failures are never cached. A cache miss
awaits the key store, which never blocks the event loop.
"""

from __future__ import annotations

import time

from engine.errors import GatewayError
from engine.storage import KeyRecord, KeyStore
from engine.storage.base import verify

_MAX_CACHED = 10_000


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(
        401,
        message,
        type="invalid_request_error",
        code="invalid_api_key",
        headers={"www-authenticate": 'Bearer realm="gateway"'},
    )


class Authenticator:
    def __init__(self, store: KeyStore, prefix: str, cache_seconds: float) -> None:
        self._store = store
        self._prefix = prefix
        self._ttl = cache_seconds
        self._verified: dict[str, tuple[float, KeyRecord]] = {}

    async def __call__(self, authorization: str | None) -> KeyRecord:
        hit = self._verified.get(authorization) if authorization else None
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await authenticate(authorization, self._store, self._prefix)
        if self._ttl > 0 and authorization:
            if len(self._verified) >= _MAX_CACHED:
                self._verified.clear()
            self._verified[authorization] = (now + self._ttl, record)
        return record


async def authenticate(authorization: str | None, store: KeyStore, prefix: str) -> KeyRecord:
    if not authorization:
        raise _unauthorized(
            "You didn't provide an API key. Send your gateway key in the Authorization header "
            "as `Authorization: Bearer <key>`."
        )
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("The Authorization header must be `Bearer <key>` with a gateway key.")
    record = await verify(store, key.strip(), prefix)
    if record is None:
        raise _unauthorized(
            f"Incorrect API key provided. Gateway keys start with `{prefix}`; ask the gateway operator for a valid one."
        )
    return record
