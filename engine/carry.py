"""Carry: provider state that must survive a round trip through the client, packed into tool-call ids.

Some providers hand back opaque state with a tool call that they insist on seeing again in later turns:
Gemini's thought signatures, Anthropic's signed thinking blocks. Clients do not keep extension fields
(the Vercel AI SDK, and so OpenCode, echo only a tool call's `id`, `type` and `function`), but every
client echoes the id. So a codec that raises such a call packs the state into the id it gives the
client, and the state comes back with the next turn.

One module, generic, used by every codec:

- raising, a codec calls `pack(call_id, owner, state)` (`owner` is its carrier family, e.g. `gemini`)
  and gives the client the result as the tool call's id;
- lowering, `engine.lower` calls `unpack_chat` / `unpack_responses` for *every* request before the codec
  runs: packed ids are replaced by their original ids everywhere they occur (assistant `tool_calls[].id`,
  tool `tool_call_id`; Responses `call_id`), and the state of the codec's own family is handed to it as
  `Call.carried` (original id → state). A foreign carrier, one packed by another family (the conversation
  started on Gemini and continues on OpenAI, or a fallback switched provider), is stripped, so a packed id
  never reaches another provider.

Envelope (every character in `[A-Za-z0-9_-]`, which OpenCode and the SDKs keep as they are):

    cr1-<owner>-<backend><length>-<token><original id>

`owner` is `[a-z0-9_]+`; `backend` is one letter naming how `token` holds the state; `length` is the
token's length in decimal, so the token may use the whole alphabet and the original id follows it
unambiguously. An id that does not parse as an envelope (or whose token does not decode) is an ordinary
id and passes through untouched.

Backends: `i` (inline) keeps the state in the id itself, base64url without padding; it needs no storage
and survives any gateway restart. A stored backend (for state too big for an id) registers another
letter with `register_backend`; its token is then a reference, and it must scope references to whoever
may read them, since clients can send any id they like.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

MAGIC = "cr1-"
_OWNER = re.compile(r"[a-z0-9_]+")
_ENVELOPE = re.compile(r"cr1-(?P<owner>[a-z0-9_]+)-(?P<backend>[a-z])(?P<length>[0-9]{1,6})-")
ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


class Backend(Protocol):
    """How a carrier's state is held: in the id itself, or by reference in some store."""

    def encode(self, owner: str, state: bytes) -> str:
        """State → a token in `[A-Za-z0-9_-]`."""
        ...

    def decode(self, owner: str, token: str) -> bytes | None:
        """Token → the state; None when the token is not (or no longer) valid."""
        ...


class InlineBackend:
    """The state travels in the id: base64url without padding."""

    def encode(self, owner: str, state: bytes) -> str:
        return base64.urlsafe_b64encode(state).rstrip(b"=").decode("ascii")

    def decode(self, owner: str, token: str) -> bytes | None:
        try:
            return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None


BACKENDS: dict[str, Backend] = {"i": InlineBackend()}


def register_backend(letter: str, backend: Backend) -> None:
    """Make another way of holding state available under a one-letter tag (e.g. `s` for stored)."""
    if not re.fullmatch(r"[a-z]", letter):
        raise ValueError(f"a carrier backend is named by one lower-case letter, not {letter!r}")
    if letter in BACKENDS and BACKENDS[letter] is not backend:
        raise ValueError(f"carrier backend {letter!r} is already registered")
    BACKENDS[letter] = backend


@dataclass(frozen=True)
class Carried:
    """What an envelope held: the original id, the family that packed it, and its state (None when the
    envelope names a backend this process does not have, or its token no longer decodes)."""

    id: str
    owner: str
    state: bytes | None


def pack(call_id: str, owner: str, state: bytes, backend: str = "i") -> str:
    """The id to give the client: `call_id` with `state` packed in. Empty state needs no envelope."""
    if not _OWNER.fullmatch(owner):
        raise ValueError(f"a carrier owner is [a-z0-9_]+, not {owner!r}")
    if not ALPHABET.fullmatch(call_id):
        raise ValueError("a packed tool-call id must stay within [A-Za-z0-9_-]")
    if not state:
        return call_id
    token = BACKENDS[backend].encode(owner, state)
    return f"{MAGIC}{owner}-{backend}{len(token)}-{token}{call_id}"


@dataclass(frozen=True)
class Envelope:
    """An envelope's parts, before its token is decoded (a stored backend fetches tokens in bulk first)."""

    owner: str
    backend: str
    token: str
    id: str  # the original tool-call id


def parse(call_id: Any) -> Envelope | None:
    """The envelope in `call_id`, undecoded, or None for an ordinary id (or anything not a string)."""
    if not isinstance(call_id, str) or not call_id.startswith(MAGIC):
        return None
    match = _ENVELOPE.match(call_id)
    if match is None:
        return None
    start, length = match.end(), int(match["length"])
    token, original = call_id[start : start + length], call_id[start + length :]
    if len(token) != length or not original:
        return None
    return Envelope(match["owner"], match["backend"], token, original)


def unpack(call_id: Any) -> Carried | None:
    """The envelope in `call_id`, or None for an ordinary id (or anything that is not a string)."""
    envelope = parse(call_id)
    if envelope is None:
        return None
    backend = BACKENDS.get(envelope.backend)
    state = backend.decode(envelope.owner, envelope.token) if backend is not None else None
    return Carried(envelope.id, envelope.owner, state)


@dataclass
class Unpacked:
    """The result of unpacking one request: the owner's states by original id, and how many foreign
    envelopes were stripped (for logs and tests)."""

    carried: dict[str, bytes]
    stripped: int = 0

    def take(self, call_id: Any, owner: str | None) -> Any:
        """`call_id` with any envelope removed; the owner's state is kept."""
        envelope = unpack(call_id)
        if envelope is None:
            return call_id
        if owner is not None and envelope.owner == owner and envelope.state is not None:
            self.carried[envelope.id] = envelope.state
        else:
            self.stripped += 1
        return envelope.id


def _ids_in_chat(messages: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """(object, key) for every place a chat request names a tool-call id."""
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        if "tool_call_id" in message:
            yield message, "tool_call_id"
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and "id" in call:
                yield call, "id"


def _ids_in_responses(items: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """(object, key) for every place a Responses request names a call id."""
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and "call_id" in item:
            yield item, "call_id"


def packed_ids(body: dict[str, Any]) -> Iterator[str]:
    """Every packed id a chat (`messages`) or Responses (`input`) request carries."""
    for key, places in (("messages", _ids_in_chat), ("input", _ids_in_responses)):
        items = body.get(key)
        if isinstance(items, list) and _mentions_envelope(items):
            for holder, name in places(items):
                if isinstance(holder[name], str) and holder[name].startswith(MAGIC):
                    yield holder[name]


def unpack_chat(body: dict[str, Any], owner: str | None) -> Unpacked:
    """Replace packed ids in a chat request's messages by their originals (copying what it changes, so
    the client's decoded request is not altered) and collect `owner`'s states."""
    return _unpack(body, "messages", _ids_in_chat, owner)


def unpack_responses(body: dict[str, Any], owner: str | None) -> Unpacked:
    """The same for a Responses request's `input` items."""
    return _unpack(body, "input", _ids_in_responses, owner)


def _unpack(body: dict[str, Any], key: str, places: Any, owner: str | None) -> Unpacked:
    result = Unpacked({})
    original = body.get(key)
    if not isinstance(original, list) or not _mentions_envelope(original):
        return result  # the common case: nothing packed, nothing copied
    copied = [_copy_message(m) for m in original]
    for holder, field in places(copied):
        holder[field] = result.take(holder[field], owner)
    body[key] = copied
    return result


def _mentions_envelope(items: list[Any]) -> bool:
    for item in items:
        if not isinstance(item, dict):
            continue
        for value in (item.get("tool_call_id"), item.get("call_id")):
            if isinstance(value, str) and value.startswith(MAGIC):
                return True
        for call in item.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("id"), str) and call["id"].startswith(MAGIC):
                return True
    return False


def _copy_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    copied = dict(message)
    if isinstance(copied.get("tool_calls"), list):
        copied["tool_calls"] = [dict(c) if isinstance(c, dict) else c for c in copied["tool_calls"]]
    return copied
