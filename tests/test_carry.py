"""The tool-call-state carrier (engine/carry.py): provider state packed into the ids clients echo."""

from __future__ import annotations

import copy
import re

import pytest

from engine import carry
from engine.catalog import Catalog
from engine.lower import lower_request
from engine.select import select_wire
from engine.spec.loader import load_specs
from tests.conftest import SPECS

SIGNATURE = bytes(range(256)) * 3  # every byte value: the id must still stay in the safe alphabet


def test_packed_id_round_trips_and_stays_in_the_alphabet_clients_keep() -> None:
    packed = carry.pack("call_0", "gemini", SIGNATURE)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", packed)
    assert carry.unpack(packed) == carry.Carried("call_0", "gemini", SIGNATURE)


def test_original_id_may_contain_anything_of_the_alphabet() -> None:
    tricky = "cr1-x-i4-abcd-tail_"  # itself envelope-shaped: the length prefix keeps parsing unambiguous
    assert carry.unpack(carry.pack(tricky, "owner_2", b"\x00state")) == carry.Carried(tricky, "owner_2", b"\x00state")


def test_empty_state_needs_no_envelope() -> None:
    assert carry.pack("call_1", "gemini", b"") == "call_1"


@pytest.mark.parametrize(
    "ordinary",
    [
        "call_abc123",
        "toolu_01A",
        "cr1-",
        "cr1-gemini-i999-short",  # claims a longer token than there is
        "cr1-gemini-i4-abcd",  # no original id after the token
        "cr1-Gemini-i4-abcdcall",  # owner outside [a-z0-9_]
        None,
        42,
    ],
)
def test_anything_that_is_not_an_envelope_is_an_ordinary_id(ordinary: object) -> None:
    assert carry.unpack(ordinary) is None


def test_unknown_backend_keeps_the_original_id_but_no_state() -> None:
    assert carry.unpack("cr1-gemini-z4-abcdcall_9") == carry.Carried("call_9", "gemini", None)


def test_pack_refuses_what_clients_would_rewrite() -> None:
    with pytest.raises(ValueError):
        carry.pack("call 1", "gemini", b"x")
    with pytest.raises(ValueError):
        carry.pack("call_1", "Gemini", b"x")


def _conversation(first: str, second: str) -> dict[str, object]:
    return {
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather in Oslo and Bergen?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": first, "type": "function", "function": {"name": "w", "arguments": "{}"}},
                    {"id": second, "type": "function", "function": {"name": "w", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": first, "content": "4C"},
            {"role": "tool", "tool_call_id": second, "content": "6C"},
        ],
    }


def test_unpacking_restores_original_ids_everywhere_and_hands_the_owner_its_state() -> None:
    first = carry.pack("call_a", "gemini", b"sig-a")
    body = _conversation(first, "call_b")
    before = copy.deepcopy(body)
    request = dict(body)
    unpacked = carry.unpack_chat(request, "gemini")
    assert unpacked.carried == {"call_a": b"sig-a"}
    assert unpacked.stripped == 0
    assert request == _conversation("call_a", "call_b")
    assert body == before, "the client's decoded request is never altered"


def test_a_foreign_carrier_is_stripped_not_forwarded() -> None:
    request = _conversation(carry.pack("call_a", "gemini", b"sig-a"), carry.pack("call_b", "anthropic", b"t"))
    unpacked = carry.unpack_chat(request, "anthropic")
    assert unpacked.carried == {"call_b": b"t"}
    assert unpacked.stripped == 2  # the call and its result both named it
    assert request == _conversation("call_a", "call_b")


def test_a_codec_without_a_carrier_gets_every_envelope_stripped() -> None:
    request = _conversation(carry.pack("call_a", "gemini", b"sig-a"), "call_b")
    assert carry.unpack_chat(request, None).carried == {}
    assert request == _conversation("call_a", "call_b")


def test_responses_input_call_ids_are_unpacked_too() -> None:
    packed = carry.pack("call_r", "gemini", b"sig")
    request = {
        "input": [
            {"type": "function_call", "call_id": packed, "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": packed, "output": "4C"},
        ]
    }
    unpacked = carry.unpack_responses(request, "gemini")
    assert unpacked.carried == {"call_r": b"sig"}
    assert [item["call_id"] for item in request["input"]] == ["call_r", "call_r"]  # type: ignore[index]


def test_a_stored_backend_plugs_in_by_letter() -> None:
    class Dictionary:
        def __init__(self) -> None:
            self.states: dict[str, bytes] = {}

        def encode(self, owner: str, state: bytes) -> str:
            token = f"k{len(self.states)}"
            self.states[token] = state
            return token

        def decode(self, owner: str, token: str) -> bytes | None:
            return self.states.get(token)

    store = Dictionary()
    carry.register_backend("t", store)
    try:
        packed = carry.pack("call_s", "anthropic", b"a long thinking block" * 100, backend="t")
        assert len(packed) < 40
        assert carry.unpack(packed) == carry.Carried("call_s", "anthropic", b"a long thinking block" * 100)
        with pytest.raises(ValueError):
            carry.register_backend("t", Dictionary())
    finally:
        del carry.BACKENDS["t"]


def test_lowering_to_an_openai_wire_never_forwards_a_packed_id() -> None:
    catalog = Catalog.from_specs(load_specs(SPECS), env={})
    candidate = catalog.all_candidates("openai/gpt-4.1")[0]
    body = _conversation(carry.pack("call_a", "gemini", b"sig-a"), "call_b")
    body["model"] = "openai/gpt-4.1"
    choice = select_wire(candidate, body, "chat.completions")
    upstream = lower_request(candidate, body, choice, "chat.completions")
    assert upstream.body["messages"] == _conversation("call_a", "call_b")["messages"]
    assert upstream.call.carried == {}
