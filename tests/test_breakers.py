"""Circuit breakers and the health document (engine/health.py), in process on a virtual clock.

routes.toml `[breaker]`: 5 attempts in a row failing by the provider's fault open its circuit for 30 s,
then one request probes it. `openai/gpt-4.1` is served by openai alone, `openai/gpt-5.5` by openai then
openrouter; each provider retries once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from engine.catalog import weighted_order
from tests.inprocess import InProcess, hang, status

CHAT = "/external/v1/chat/completions"
HEALTH = "/external/health"
HELLO = [{"role": "user", "content": "Say hello."}]
ONE_PROVIDER = {"model": "openai/gpt-4.1", "messages": HELLO}
TWO_PROVIDERS = {"model": "openai/gpt-5.5", "messages": HELLO}


def open_openai(gw: InProcess) -> None:
    """Five failed attempts in a row: two requests (tried and retried each), then a third's first try."""
    gw.upstreams.script("openai", *[status(503)] * 5)
    for _ in range(3):
        assert gw.post(CHAT, json=ONE_PROVIDER).status_code == 503
    assert gw.upstreams.hits("openai") == 5, "the circuit opened at the fifth: that request was not retried"


def circuit(gw: InProcess, provider: str) -> dict[str, Any]:
    rows = {row["id"]: row for row in gw.get(HEALTH, headers={"Authorization": ""}).json()["providers"]}
    return dict(rows[provider])


def wait(gw: InProcess, seconds: float) -> None:
    gw.run(asyncio.sleep(seconds))


def test_repeated_failures_open_the_circuit_and_requests_fail_fast(gw: InProcess) -> None:
    open_openai(gw)
    response = gw.post(CHAT, json=ONE_PROVIDER)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "providers_unavailable"
    assert response.headers["retry-after"] == "30"
    assert gw.upstreams.hits("openai") == 5, "an open circuit is not tried"
    assert circuit(gw, "openai")["circuit"] == "open"


def test_an_open_circuit_is_skipped_without_using_an_attempt(gw: InProcess) -> None:
    open_openai(gw)
    response = gw.post(CHAT, json=TWO_PROVIDERS)
    assert response.status_code == 200
    assert response.headers["x-compose-upstream-provider"] == "openrouter"
    assert response.headers["x-compose-attempts"] == "1"
    assert gw.upstreams.hits("openai") == 5


def test_after_the_cooldown_one_probe_goes_through_and_its_success_closes_the_circuit(gw: InProcess) -> None:
    open_openai(gw)
    wait(gw, 29.9)
    assert gw.post(CHAT, json=ONE_PROVIDER).status_code == 503 and gw.upstreams.hits("openai") == 5
    wait(gw, 0.2)
    assert circuit(gw, "openai")["circuit"] == "half_open"

    gw.upstreams.script("openai", hang(2))  # the probe takes 2 s: meanwhile nobody else goes to openai
    probe, meanwhile = gw.posts({"path": CHAT, "json": ONE_PROVIDER}, {"path": CHAT, "json": ONE_PROVIDER})
    assert probe.status_code == 200
    assert meanwhile.status_code == 503 and meanwhile.json()["error"]["code"] == "providers_unavailable"
    assert gw.upstreams.hits("openai") == 6

    assert circuit(gw, "openai")["circuit"] == "closed"
    assert gw.post(CHAT, json=ONE_PROVIDER).status_code == 200


def test_a_failed_probe_opens_the_circuit_again(gw: InProcess) -> None:
    open_openai(gw)
    wait(gw, 30.1)
    gw.upstreams.script("openai", status(502))
    response = gw.post(CHAT, json=ONE_PROVIDER)
    assert response.status_code == 502 and gw.upstreams.hits("openai") == 6, "the probe is not retried"
    row = circuit(gw, "openai")
    assert row["circuit"] == "open" and row["retry_in_seconds"] == 30


def test_the_requests_own_errors_never_open_a_circuit(gw: InProcess) -> None:
    gw.upstreams.script("openai", *[status(400)] * 8)
    for _ in range(8):
        assert gw.post(CHAT, json=ONE_PROVIDER).status_code == 400
    assert circuit(gw, "openai")["circuit"] == "closed"


def test_the_health_document_shows_each_providers_circuit_and_error_rate_and_nothing_secret(
    gw: InProcess,
) -> None:
    gw.upstreams.script("openai", status(500))
    assert gw.post(CHAT, json=ONE_PROVIDER).status_code == 200  # failed once, then the retry answered
    response = gw.get(HEALTH, headers={"Authorization": ""})
    assert response.status_code == 200
    doc = response.json()
    assert doc["status"] == "ok"
    row = circuit(gw, "openai")
    assert row == row | {"circuit": "closed", "attempts": 2, "failures": 1, "error_rate": 0.5}
    assert row["connections"] == {"in_use": 0, "limit": 100}
    text = response.text
    assert "http" not in text and "sk-" not in text and ".test" not in text

    gw.upstreams.reset()
    open_openai(gw)
    assert gw.get(HEALTH).json()["status"] == "degraded"
    wait(gw, 61)
    assert circuit(gw, "openai") | {"retry_in_seconds": 0} == circuit(gw, "openai") | {
        "attempts": 0,
        "failures": 0,
        "retry_in_seconds": 0,
    }, "the error rate covers the last minute only"


def test_weights_split_traffic_among_candidates_of_equal_priority(tmp_path: Path) -> None:
    """openai and openrouter both at priority 50 for gpt-5.5, weighted 3 and 1: openai leads 3 times in 4."""

    def weighted(weight: int) -> Callable[[str], str]:
        header = '[models."openai/gpt-5.5"]\n'
        return lambda text: text.replace(header, f"{header}priority = 50\nweight = {weight}\n")

    edits = {"providers/openai.toml": weighted(3), "providers/openrouter.toml": weighted(1)}
    with InProcess(tmp_path, edits) as gw:
        candidates = gw.gateway.catalog.resolve_all("openai/gpt-5.5")  # live ones (azure is unconfigured here)
        rng = random.Random(7)
        leads = sum(weighted_order(candidates, rng)[0].provider.id == "openai" for _ in range(4000))
        assert 0.72 < leads / 4000 < 0.78, leads
        served = {gw.post(CHAT, json=TWO_PROVIDERS).headers["x-compose-upstream-provider"] for _ in range(40)}
        assert served == {"openai", "openrouter"}, "each request draws its own order"


def test_the_health_route_needs_no_key(gw: InProcess) -> None:
    response = gw.run(httpx.AsyncClient(transport=gw._client._transport, base_url="http://gateway.test").get(HEALTH))
    assert response.status_code == 200 and response.json()["providers"]
