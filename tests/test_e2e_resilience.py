"""Resilience over real sockets: `engine serve` against the loopback fake failing on command (hang, reset,
trickle, die mid-stream, 429 with retry-after). tests/test_attempts.py and tests/test_timeouts.py cover the
policy and every phase in process on a virtual clock; these tests show the same over TCP, with the fake
watching the gateway's side of each connection."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import PROVIDER_KEY

CHAT = "/external/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello."}]
ONE_PROVIDER = {"model": "openai/gpt-4.1", "messages": HELLO}


def chunk(text: str) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4.1",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


def wait_for(condition: Any, seconds: float = 5.0) -> float:
    """Poll `condition` until it holds; the time it held at (time.time()), or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        time.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


def test_a_client_that_hangs_up_on_a_json_call_cancels_the_upstream_within_a_second(
    gateway: Any, upstream: Any
) -> None:
    upstream.script({"hang": 20})
    headers = {"Authorization": f"Bearer {gateway.key}"}
    try:
        httpx.post(gateway.root + CHAT, json=ONE_PROVIDER, headers=headers, timeout=1.0)
        raise AssertionError("the upstream hangs: the call cannot have answered")
    except httpx.ReadTimeout:
        left = time.time()  # httpx has closed the connection
    wait_for(upstream.hung_up_at)
    assert upstream.hung_up_at()[-1] - left < 1.0, "the upstream call outlived its client by a second or more"


def test_a_client_that_stops_reading_a_stream_then_leaves_cancels_the_upstream(gateway: Any, upstream: Any) -> None:
    # 400 MB, as fast as the gateway reads it: more than the kernel's socket buffers can hold (Linux may grow a
    # loopback socket's to tcp_rmem's maximum, 32 MiB on some machines), so the fake is still writing.
    upstream.script({"sse": [chunk("x" * 2000)], "repeat": 200_000})
    before = upstream.aborted()
    headers = {"Authorization": f"Bearer {gateway.key}"}
    # A small, fixed receive buffer: Linux's autotuning may otherwise grow a loopback socket's buffer to
    # tcp_rmem's maximum (32 MiB on some machines), enough to swallow most of the stream unread.
    small_buffer = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)])
    with (
        httpx.Client(transport=small_buffer) as client,
        client.stream("POST", gateway.root + CHAT, json=ONE_PROVIDER | {"stream": True}, headers=headers) as response,
    ):
        assert next(response.iter_lines()).startswith("data: ")
        time.sleep(0.5)  # not reading: the gateway's writes back up
    left = time.time()
    try:
        cancelled = wait_for(lambda: upstream.aborted() > before)
    except AssertionError:
        raise AssertionError(gateway.log.read_text()[-2000:]) from None
    assert cancelled - left < 1.0


def test_a_reset_after_the_request_was_sent_is_a_502_and_not_retried(http: httpx.Client, upstream: Any) -> None:
    upstream.script({"reset": True})
    response = http.post(CHAT, json=ONE_PROVIDER)
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unreachable"
    assert len(upstream.requests()) == 1, "the provider may have started the work"


def test_a_stream_that_dies_mid_way_is_never_retried_and_ends_with_one_error_event(
    http: httpx.Client, upstream: Any
) -> None:
    upstream.script({"sse": [chunk("Hel"), chunk("lo"), chunk("!")], "die_after": 2})
    with http.stream("POST", CHAT, json=ONE_PROVIDER | {"stream": True}) as response:
        raw = response.read().decode()
    events = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    assert response.status_code == 200 and '"Hel"' in events[0] and '"lo"' in events[1]
    assert "upstream_stream_interrupted" in events[-1] and len(events) == 3
    assert len(upstream.requests()) == 1


def test_a_trickling_upstream_is_cut_at_its_total_timeout(http: httpx.Client, upstream: Any) -> None:
    """`slowpoke` (tests/fixtures): idle 0.5 s, total 2 s; the fake sends a byte every 0.1 s."""
    upstream.script({"json": {"padding": "x" * 200}, "trickle": 0.1})
    began = time.monotonic()
    response = http.post(CHAT, json={"model": "test/slow", "messages": HELLO})
    took = time.monotonic() - began
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_total_timeout"
    assert 1.9 <= took < 10, took


def test_a_429_is_retried_after_the_wait_it_asks_for(http: httpx.Client, upstream: Any) -> None:
    limited = {"error": {"message": "Slow down", "type": "requests", "code": "rate_limit_exceeded"}}
    upstream.script({"status": 429, "json": limited, "headers": {"retry-after-ms": "700"}})
    began = time.monotonic()
    response = http.post(CHAT, json=ONE_PROVIDER)
    assert response.status_code == 200 and response.headers["x-compose-attempts"] == "2"
    assert time.monotonic() - began >= 0.7
    assert len(upstream.requests()) == 2


# ------------------------------------------------------------------------------------ circuit breaker


@pytest.fixture(scope="module")
def breaking(fake: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A gateway of its own whose breakers open after 3 failures and cool down for 1 s."""
    from tests.servers import run_gateway

    env = {"OPENAI_API_KEY": PROVIDER_KEY, "OPENAI_BASE_URL": fake.url}
    with run_gateway(
        tmp_path_factory.mktemp("breaker"), env, breaker="\n[breaker]\nfailures = 3\ncooldown = 1\n"
    ) as gw:
        yield gw


def test_a_breaker_opens_half_opens_and_closes(breaking: Any, upstream: Any) -> None:
    headers = {"Authorization": f"Bearer {breaking.key}"}
    overloaded = {"status": 503, "json": {"error": {"message": "Overloaded", "type": "server_error"}}}

    def chat() -> httpx.Response:
        return httpx.post(breaking.root + CHAT, json=ONE_PROVIDER, headers=headers, timeout=20)

    def state() -> str:
        rows = httpx.get(breaking.root + "/external/health", timeout=20).json()["providers"]
        return str(next(r for r in rows if r["id"] == "openai")["circuit"])

    upstream.script(*[overloaded] * 3)
    assert [chat().status_code for _ in range(2)] == [503, 503]  # tried, retried; then tried once
    assert len(upstream.requests()) == 3 and state() == "open"
    fast = chat()
    assert fast.status_code == 503 and fast.json()["error"]["code"] == "providers_unavailable"
    assert len(upstream.requests()) == 3, "an open circuit sends nothing upstream"

    wait_for(lambda: state() == "half_open", seconds=10)
    probe = chat()
    assert probe.status_code == 200 and len(upstream.requests()) == 4
    assert state() == "closed"
