"""The two phases before a request reaches the upstream, over real sockets: waiting for a connection of
the provider's own pool (`[pool] connections`, `[timeouts] pool`) and opening one (`[timeouts] connect`).
tests/test_timeouts.py covers both in process on a virtual clock; here `engine serve` meets a pool of one
connection held by a hanging request, and a listening socket whose accept queue is full, so the kernel
leaves the gateway's connection attempt unanswered (on Linux loopback a SYN to a full queue is dropped)."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import completion

HELLO = [{"role": "user", "content": "Say hello."}]

NARROW = """
[provider]
id = "narrow"
name = "One-connection test upstream"
wire = "openai_chat"
base_url = "http://127.0.0.1:9/v1"
base_url_env = "NARROW_BASE_URL"

[auth]
env = "NARROW_API_KEY"

[pool]
connections = 1

[timeouts]
pool = 0.3
read = 10

[models."test/narrow"]
upstream = "narrow-1"
"""

UNANSWERED = """
[provider]
id = "unanswered"
name = "Test upstream that never accepts"
wire = "openai_chat"
base_url = "http://127.0.0.1:9/v1"
base_url_env = "UNANSWERED_BASE_URL"

[auth]
env = "UNANSWERED_API_KEY"

[timeouts]
connect = 0.3

[models."test/unanswered"]
upstream = "unanswered-1"
"""


@pytest.fixture(scope="module")
def full_backlog() -> Iterator[int]:
    """The port of a socket that listens but never accepts, its accept queue (backlog 0: one) filled."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
    except TimeoutError:
        pass  # what the gateway will meet
    else:
        pytest.skip("this kernel answers connections to a full accept queue: no connect timeout to provoke")
    finally:
        probe.close()
    try:
        yield port
    finally:
        filler.close()
        server.close()


@pytest.fixture(scope="module")
def phases(fake: Any, full_backlog: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.servers import run_gateway

    env = {
        "NARROW_API_KEY": "sk-narrow-000000",
        "NARROW_BASE_URL": fake.url,
        "UNANSWERED_API_KEY": "sk-unanswered-000000",
        "UNANSWERED_BASE_URL": f"http://127.0.0.1:{full_backlog}/v1",
    }
    extra = {"narrow.toml": NARROW, "unanswered.toml": UNANSWERED}
    with run_gateway(tmp_path_factory.mktemp("phases"), env, extra_providers=extra) as gw:
        yield gw


def chat(gateway: Any, model: str) -> httpx.Response:
    return httpx.post(
        gateway.url + "/chat/completions",
        json={"model": model, "messages": HELLO},
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=30,
    )


def test_a_request_that_finds_the_providers_pool_full_is_a_504_after_the_pool_wait(phases: Any, upstream: Any) -> None:
    upstream.script({"json": completion(), "delay": 2.5})  # holds the one connection
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        holding = pool.submit(chat, phases, "test/narrow")
        deadline = time.monotonic() + 10
        while not upstream.requests() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert upstream.requests(), "the first request reached the upstream"
        began = time.monotonic()
        waited = chat(phases, "test/narrow")
        took = time.monotonic() - began
        assert holding.result().status_code == 200, "the request holding the connection is unharmed"
    assert waited.status_code == 504, waited.text
    error = waited.json()["error"]
    assert error["code"] == "upstream_pool_timeout" and "0.3 s" in error["message"]
    assert waited.headers["x-compose-upstream-provider"] == "narrow"
    assert 0.3 <= took < 2.3, "refused after the pool wait (and its retry), not once the holder's 2.5 s are over"
    assert len(upstream.requests()) == 1, "the waiting request never reached the upstream"


def test_a_provider_that_never_accepts_the_connection_is_a_504_after_the_connect_timeout(phases: Any) -> None:
    began = time.monotonic()
    response = chat(phases, "test/unanswered")
    took = time.monotonic() - began
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_connect_timeout" and "0.3 s" in error["message"]
    assert response.headers["x-compose-upstream-provider"] == "unanswered"
    assert took < 5, "cut at the connect timeout (and its retries), not at the kernel's ~2 min SYN retries"
