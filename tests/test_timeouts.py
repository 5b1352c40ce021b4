"""Per-phase timeouts, pools and the client's deadline (engine/timeouts.py), in process on a virtual clock:
a 600 s hang takes no real time, and the phase that expired is measured exactly: at its limit, or at most one
watchdog tick (`engine.timeouts.TICK`) later.

Shipped specs: openai has `read = 600` (so first byte and idle gaps 600 s each), total 1800 s, its own
pool of 100 connections; `openai/gpt-4.1` has no other provider.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.timeouts import TICK
from tests.inprocess import InProcess, chunk, gaps, hang, sse, status, trickle

CHAT = "/external/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello."}]
ONE_PROVIDER = {"model": "openai/gpt-4.1", "messages": HELLO}
TWO_PROVIDERS = {"model": "openai/gpt-5.5", "messages": HELLO}


def openai_with(tables: str) -> dict[str, Callable[[str], str]]:
    """An edit of openai.toml: its `[timeouts]` replaced (and more tables added) by `tables`."""

    def edit(text: str) -> str:
        return text.replace("[timeouts]\nconnect = 10\nread = 600\n", tables + "\n")

    return {"providers/openai.toml": edit}


def error(response: Any) -> dict[str, Any]:
    return dict(response.json()["error"])


def test_an_upstream_that_never_answers_is_cut_at_its_first_byte_timeout(gw: InProcess) -> None:
    gw.upstreams.script("openai", hang())
    response, took = gw.timed_post(CHAT, json=ONE_PROVIDER)
    assert response.status_code == 504
    assert error(response)["code"] == "upstream_first_byte_timeout"
    assert "600 s" in error(response)["message"] and "`openai`" in error(response)["message"]
    assert took == pytest.approx(600 + TICK / 2, abs=TICK / 2 + 0.01)
    assert gw.upstreams.hits() == 1, "sent: not retried (routes.toml fallback.on_timeout is off)"


def test_a_stream_that_stalls_before_its_first_chunk_is_a_504(gw: InProcess) -> None:
    gw.upstreams.script("openai", hang())
    response = gw.post(CHAT, json=ONE_PROVIDER | {"stream": True})
    assert response.status_code == 504 and error(response)["code"] == "upstream_first_byte_timeout"


def test_a_stream_that_stalls_mid_way_ends_with_one_idle_timeout_event(gw: InProcess) -> None:
    gw.upstreams.script("openai", sse([chunk("Hel"), chunk("lo")], gap=700))
    response, took = gw.timed_post(CHAT, json=ONE_PROVIDER | {"stream": True})
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert '"Hel"' in events[0] and "upstream_idle_timeout" in events[-1]
    assert "[DONE]" not in response.text
    assert took == pytest.approx(600 + TICK / 2, abs=TICK / 2 + 0.01), "the first gap of 700 s is cut at 600"


def test_an_upstream_trickling_bytes_is_cut_at_the_total_timeout(tmp_path: Path) -> None:
    tables = "[timeouts]\nfirst_byte = 5\nidle = 5\ntotal = 30"
    with InProcess(tmp_path, openai_with(tables)) as gw:
        gw.upstreams.script("openai", trickle(gap=1.0))
        response, took = gw.timed_post(CHAT, json=ONE_PROVIDER)
        assert response.status_code == 504 and error(response)["code"] == "upstream_total_timeout"
        assert took == pytest.approx(30 + TICK / 2, abs=TICK / 2 + 0.01), "never idle for 5 s, yet cut at 30 s in all"

        gw.reset().upstreams.script("openai", sse([chunk("tick ")] * 1000, gap=1.0))
        response, took = gw.timed_post(CHAT, json=ONE_PROVIDER | {"stream": True})
        assert response.status_code == 200 and "upstream_total_timeout" in response.text.splitlines()[-2]
        assert took == pytest.approx(30 + TICK / 2, abs=TICK / 2 + 0.01)


def test_a_full_pool_makes_its_provider_wait_then_504_and_no_other_provider_waits(tmp_path: Path) -> None:
    tables = "[timeouts]\nread = 60\npool = 2\n\n[pool]\nconnections = 1\n\n[retry]\nmax_retries = 0"
    with InProcess(tmp_path, openai_with(tables)) as gw:
        gw.upstreams.script("openai", hang(10))
        began = gw.loop.time()
        slow, starved, other = gw.posts(
            {"path": CHAT, "json": ONE_PROVIDER},
            {"path": CHAT, "json": ONE_PROVIDER},
            {"path": CHAT, "json": {"model": "meta-llama/llama-3.1-8b", "messages": HELLO}},
        )
        assert slow.status_code == 200 and other.status_code == 200
        assert starved.status_code == 504 and error(starved)["code"] == "upstream_pool_timeout"
        assert "2 s" in error(starved)["message"]
        assert gw.upstreams.order() == ["openai", "groq"], "the starved request never reached openai"
        assert gw.upstreams.times("groq") == [began], "groq's pool is its own: no wait"


def test_the_clients_deadline_bounds_an_attempt(gw: InProcess) -> None:
    gw.upstreams.script("openai", hang())
    response, took = gw.timed_post(CHAT, json=ONE_PROVIDER, headers={"x-compose-deadline-ms": "1500"})
    assert response.status_code == 504 and error(response)["code"] == "deadline_exceeded"
    assert took == pytest.approx(1.5 + TICK / 2, abs=TICK / 2 + 0.01)


def test_the_clients_deadline_bounds_all_attempts_together(gw: InProcess) -> None:
    """openai's 429 asks for 2 s; with 1 s left the gateway moves on to openrouter at once instead."""
    gw.upstreams.script("openai", status(429, "rate_limit_exceeded", {"retry-after": "2"}))
    response, took = gw.timed_post(CHAT, json=TWO_PROVIDERS, headers={"x-compose-deadline-ms": "1000"})
    assert response.status_code == 200 and gw.upstreams.order() == ["openai", "openrouter"]
    assert took < 0.01

    gw.reset().upstreams.script("openai", status(503), status(503))
    gw.upstreams.script("openrouter", hang())
    response, took = gw.timed_post(CHAT, json=TWO_PROVIDERS, headers={"x-compose-deadline-ms": "2000"})
    assert response.status_code == 504 and error(response)["code"] == "deadline_exceeded"
    assert took == pytest.approx(2.0 + TICK / 2, abs=TICK / 2 + 0.01), "backoff, retry and fallback all inside the 2 s"
    assert gw.upstreams.order() == ["openai", "openai", "openrouter"]
    assert gaps(gw.upstreams.times())[0] <= 0.25


@pytest.mark.parametrize("value", ["soon", "-5", "0", "inf", "nan"])
def test_a_malformed_deadline_is_a_400_naming_the_header(gw: InProcess, value: str) -> None:
    response = gw.post(CHAT, json=ONE_PROVIDER, headers={"x-compose-deadline-ms": value})
    assert response.status_code == 400
    assert error(response)["param"] == "x-compose-deadline-ms"
    assert gw.upstreams.hits() == 0
