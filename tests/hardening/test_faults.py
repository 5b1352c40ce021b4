"""A broken or hostile upstream never breaks the gateway: every fault of `fault_upstream.py` ends as an
OpenAI-shaped answer with the right status and code, and with nothing secret in it (the `audited` client
checks every answer for the provider key, the upstream's URL and host, and stack traces)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.hardening.conftest import CHAT, HELLO, RESPONSES, leaks, openai_error
from tests.servers import Gateway


def chat(fault: str, **extra: Any) -> dict[str, Any]:
    return {"model": f"faulty/{fault}", "messages": HELLO, **extra}


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("ok", 200, None),
        ("gzip", 200, None),
        ("trickle", 200, None),
        ("reset", 502, "upstream_unreachable"),
        ("hang_headers", 504, "upstream_first_byte_timeout"),
        ("malformed_json", 502, "upstream_invalid_response"),
        ("non_object", 502, "upstream_invalid_response"),
        ("wrong_shape", 200, None),  # chat relays an object as is; the /responses bridge below refuses it
        ("brotli", 502, "upstream_invalid_response"),
        ("gzip_bomb", 502, "upstream_response_too_large"),
        ("error_10mb", 500, "upstream_server_error"),
        ("redirect", 502, "upstream_invalid_response"),
        ("status_999", 502, "upstream_invalid_response"),
        ("status_204", 502, "upstream_invalid_response"),
        ("traceback", 500, "upstream_server_error"),
        ("leak500_fields", 500, "upstream_server_error"),
        ("leak400_fields", 400, None),
    ],
)
def test_a_misbehaving_upstream_gets_an_openai_shaped_answer(
    audited: httpx.Client, fault: str, status: int, code: str | None
) -> None:
    response = audited.post(CHAT, json=chat(fault))
    assert response.status_code == status, response.text[:500]
    if status != 200:
        error = openai_error(response)
        assert error is not None, response.text[:500]
        assert error["code"] == code
        assert len(error["message"]) <= 2000  # routes.toml upstream.max_message_chars
        assert response.headers["x-compose-upstream-provider"] == "faulty"


def test_the_gateway_asks_only_for_encodings_it_can_bound(audited: httpx.Client) -> None:
    assert audited.post(CHAT, json=chat("gzip")).json()["choices"][0]["message"]["content"]


def test_an_upstream_error_in_every_field_is_redacted_field_by_field(audited: httpx.Client) -> None:
    for fault, status in (("leak500_fields", 500), ("leak400_fields", 400)):
        response = audited.post(CHAT, json=chat(fault))
        error = openai_error(response)
        assert response.status_code == status and error is not None
        # the upstream's type/code/param carried secrets: replaced by the gateway's own, never passed on
        assert error["type"] == ("api_error" if status == 500 else "invalid_request_error")
        assert error["param"] is None
        assert "PROVIDERSECRET" not in error["message"].upper()


def test_forwarded_rate_limit_headers_are_redacted(audited: httpx.Client) -> None:
    response = audited.post(CHAT, json=chat("leak500_fields"))
    assert "[redacted]" in response.headers["x-ratelimit-limit-requests"]
    assert response.headers["retry-after"] == "[redacted]"


def test_a_stack_trace_from_the_upstream_is_withheld(audited: httpx.Client) -> None:
    error = openai_error(audited.post(CHAT, json=chat("traceback")))
    assert error is not None and "Traceback" not in error["message"] and 'File "' not in error["message"]


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("non_object", "upstream_invalid_response"),
        ("bridged/non_object", "upstream_invalid_response"),
        ("bridged/wrong_shape", "upstream_invalid_response"),  # a passthrough relays it; the bridge cannot
        ("status_999", "upstream_invalid_response"),
        ("redirect", "upstream_invalid_response"),
    ],
)
def test_responses_clients_get_the_same_502s(audited: httpx.Client, fault: str, code: str) -> None:
    response = audited.post(RESPONSES, json={"model": f"faulty/{fault}", "input": "hi"})
    assert response.status_code == 502
    error = openai_error(response)
    assert error is not None and error["code"] == code


def sse_data(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in response.text.splitlines()
        if line.startswith("data: ") and line[6:] != "[DONE]"
    ]


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("hang_stream", "upstream_idle_timeout"),
        ("stream_garbage", "upstream_stream_interrupted"),
        ("gzip_bomb", "upstream_response_too_large"),
    ],
)
def test_a_stream_that_goes_wrong_ends_with_one_error_event(audited: httpx.Client, fault: str, code: str) -> None:
    response = audited.post(CHAT, json=chat(fault, stream=True))
    if response.status_code != 200:  # failed before its first event: an HTTP error answer instead
        error = openai_error(response)
        assert error is not None and error["code"] in (code, "upstream_stream_interrupted"), response.text
        return
    events = sse_data(response)
    assert events and "error" in events[-1], response.text[:500]
    assert sum("error" in e for e in events) == 1
    assert events[-1]["error"]["code"] in (code, "upstream_stream_interrupted")


def test_a_malformed_responses_event_ends_the_stream_with_one_error_event_numbered_in_order(
    audited: httpx.Client,
) -> None:
    response = audited.post(RESPONSES, json={"model": "faulty/bad_sequence", "input": "hi", "stream": True})
    events = sse_data(response)
    numbers = [e["sequence_number"] for e in events]
    assert [e["type"] for e in events][-1] == "error" and sum(e["type"] == "error" for e in events) == 1
    assert numbers == sorted(set(numbers)) and numbers[-1] == 2, numbers  # events 0 and 1, then the error


def test_the_gzip_bomb_leaves_memory_where_it_was(probe: Gateway, audited: httpx.Client) -> None:
    """256 MiB inflated (a 2 GiB bomb in bench/probe.py): the cap (64 MiB) stops it, and the memory
    it took is given back; requests keep being served meanwhile."""
    audited.post(CHAT, json=chat("ok"))
    before = probe.rss_mb()
    for stream in (False, True):
        response = audited.post(CHAT, json=chat("gzip_bomb", stream=stream))
        assert "upstream_response_too_large" in response.text
    started = time.monotonic()
    assert audited.post(CHAT, json=chat("ok")).status_code == 200
    assert time.monotonic() - started < 5
    assert probe.rss_mb() - before < 100, (before, probe.rss_mb())


def test_the_gateway_log_holds_no_secret(probe: Gateway, fault_url: str, audited: httpx.Client) -> None:
    audited.post(CHAT, json=chat("leak500_fields"))
    assert not leaks(probe.log.read_text(), probe, fault_url)
