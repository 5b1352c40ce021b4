"""The stored backend of `engine.carry`: state too big for a tool-call id (Anthropic's signed thinking
blocks are kilobytes) is kept in a store, and the id carries a reference to it.

`engine.carry`'s backends are synchronous and codecs do no I/O, so the I/O happens around them, per request:

- before lowering, `enter(store, key_id, body, ttl)` finds the stored references in the request's tool-call
  ids and fetches them in one query, for this gateway key only, and opens the request's scope;
- the backend (letter `s`) decodes a reference from what was fetched, and encodes new state into the
  scope's outbox under a reference derived from the state (sha-256, so one block packed into several
  tool calls is stored once);
- after raising, `flush()` writes the outbox with a TTL (routes.toml `gateway.carry_ttl_seconds`).

The store is the gateway's database (`engine.storage`, interface `CarryStore`): the embedded SQLite by
default, a shared one when several instances serve the same clients.

References are scoped to the gateway key: a client that sends another key's reference gets nothing back,
and the codec then serves the turn without the state (for Anthropic: thinking off for that turn).
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from engine import carry
from engine.storage.base import CarryStore

LETTER = "s"


_NOTHING: Mapping[str, bytes] = MappingProxyType({})  # what a request that names no stored reference fetched


class Scope:
    """One request's view of the store: what it fetched, and what it has to write. Most requests fetch and
    write nothing, so neither is made for them."""

    __slots__ = ("fetched", "key_id", "outbox", "store", "ttl_seconds")

    def __init__(self, store: CarryStore, key_id: str, ttl_seconds: float) -> None:
        self.store = store
        self.key_id = key_id
        self.ttl_seconds = ttl_seconds
        self.fetched: Mapping[str, bytes] = _NOTHING
        self.outbox: dict[str, bytes] | None = None  # made by the first state packed by reference

    async def flush(self) -> None:
        if self.outbox:
            outbox, self.outbox = self.outbox, None
            await self.store.put_carried(self.key_id, outbox, time.time() + self.ttl_seconds)


_SCOPE: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("carry_scope", default=None)


def in_scope() -> bool:
    """Whether this request has a store (codecs then pack big state by reference)."""
    return _SCOPE.get() is not None


class StoredBackend:
    """`engine.carry` backend `s`: the token is a reference into the request's store."""

    def encode(self, owner: str, state: bytes) -> str:
        scope = _SCOPE.get()
        if scope is None:
            raise RuntimeError("the stored carry backend needs a request scope (engine.carry_store.enter)")
        digest = hashlib.sha256(owner.encode() + b"\0" + state).digest()[:24]
        ref = base64.urlsafe_b64encode(digest).decode("ascii")  # 32 characters, no padding
        if scope.outbox is None:
            scope.outbox = {}
        scope.outbox[ref] = state
        return ref

    def decode(self, owner: str, token: str) -> bytes | None:
        scope = _SCOPE.get()
        return scope.fetched.get(token) if scope is not None else None


carry.register_backend(LETTER, StoredBackend())


def _stored_refs(body: dict[str, Any]) -> Iterator[str]:
    for call_id in carry.packed_ids(body):
        envelope = carry.parse(call_id)
        if envelope is not None and envelope.backend == LETTER:
            yield envelope.token


async def enter(store: CarryStore, key_id: str, body: dict[str, Any], ttl_seconds: float) -> Scope:
    """Open this request's scope, with every stored reference its tool-call ids name already fetched."""
    scope = Scope(store, key_id, ttl_seconds)
    refs = set(_stored_refs(body))
    if refs:
        scope.fetched = await store.get_carried(key_id, refs, time.time())
    _SCOPE.set(scope)
    return scope


def unwritten() -> bool:
    """Whether this request packed state that `flush` has yet to write (an await saved on most requests)."""
    scope = _SCOPE.get()
    return scope is not None and bool(scope.outbox)


async def flush() -> None:
    scope = _SCOPE.get()
    if scope is not None:
        await scope.flush()
