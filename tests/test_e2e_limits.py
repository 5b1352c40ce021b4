"""Limits through the real server: a key over its rate, concurrency or budget gets an OpenAI-shaped 429
naming the limit, with retry-after; `engine keys update` changes limits without a new key; receipts
appear only on routes that ask for them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from typing import Any

import httpx

from engine.storage import open_database
from tests.conftest import completion, create_key

CHAT = "/external/v1/chat/completions"
BODY = {"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": "Say hello."}]}


def new_key(gateway: Any, name: str, **limits: float) -> str:
    """A key with its own limits, written straight to the gateway's database (the CLI is tested below)."""
    return create_key(gateway.env["ENGINE_DB"], name, **limits)


def post(gateway: Any, key: str, path: str = CHAT, body: dict[str, Any] = BODY) -> httpx.Response:
    return httpx.post(gateway.root + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=20)


def test_over_the_rate_a_key_gets_429_naming_the_limit_until_updated(gateway: Any, upstream: Any) -> None:
    key = new_key(gateway, "rpm-2", rpm=2)
    assert [post(gateway, key).status_code for _ in range(2)] == [200, 200]
    refused = post(gateway, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "requests per minute (rpm): limit 2" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert len(upstream.requests()) == 2, "a refused request never reaches the provider"

    updated = gateway.engine("keys", "update", "rpm-2", "--rpm", "100")
    assert updated.returncode == 0 and "rpm=100" in updated.stdout, updated.stderr
    time.sleep(1.1)  # key_cache_seconds: instances see the change within it
    assert post(gateway, key).status_code == 200, "the same key, a higher limit"


def test_concurrent_requests_beyond_the_limit_are_refused_never_queued(gateway: Any, upstream: Any) -> None:
    key = new_key(gateway, "conc-2", concurrent=2)
    slow = {"json": completion(), "delay": 3.0}  # long enough that all 8 arrive while 2 are held, under load
    upstream.script(*[slow] * 8)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = sorted(r.status_code for r in pool.map(lambda _: post(gateway, key), range(8)))
    assert statuses == [200, 200, *[429] * 6], statuses
    assert post(gateway, key).status_code == 200, "slots come back when requests end"


def test_a_spent_budget_is_429_budget_exceeded(gateway: Any, upstream: Any) -> None:
    key = new_key(gateway, "budget", daily_usd=0.0001)  # each answer costs 0.00008 USD
    assert [post(gateway, key).status_code for _ in range(2)] == [200, 200]
    refused = post(gateway, key)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")
    assert "daily spend budget" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 86_400


def test_keys_create_refuses_unknown_tiers_and_bad_values(gateway: Any) -> None:
    unknown = gateway.engine("keys", "create", "--name", "x1", "--tier", "platinum")
    assert unknown.returncode == 1 and "no tier 'platinum'" in unknown.stderr and "free" in unknown.stderr
    bad = gateway.engine("keys", "create", "--name", "x2", "--rpm", "2.5")
    assert bad.returncode == 1 and "invalid limit" in bad.stderr
    tiered = gateway.engine("keys", "create", "--name", "x3", "--tier", "free", "--tpm", "500")
    assert tiered.returncode == 0 and tiered.stdout.strip().startswith("compose-")
    [record] = [r for r in asyncio.run(_keys(gateway.env["ENGINE_DB"])) if r.name == "x3"]
    assert (record.tier, dict(record.limits)) == ("free", {"tpm": 500})


def test_receipts_come_only_where_the_route_asks(gateway: Any, upstream: Any) -> None:
    with_receipt = post(gateway, gateway.key, "/internal/v1/chat/completions")
    assert with_receipt.status_code == 200
    receipt = with_receipt.json()["compose_receipt"]
    assert receipt["request_id"] == with_receipt.headers["x-request-id"]
    assert receipt["usage"]["prompt_tokens"] == 12 and receipt["usage"]["completion_tokens"] == 7
    assert receipt["cost_usd"] == round((12 * 2.00 + 7 * 8.00) / 1e6, 9)
    streamed = httpx.post(
        gateway.root + "/internal/v1/chat/completions",
        json={**BODY, "stream": True},
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=20,
    )
    events = streamed.text.strip().split("\n\n")
    assert events[-2] == "data: [DONE]", "the answer ends as OpenAI's does; the receipt follows it"
    name, data = events[-1].split("\n")
    assert name == "event: compose_receipt"
    streamed_receipt = json.loads(data.removeprefix("data: "))["compose_receipt"]
    assert streamed_receipt["request_id"] == streamed.headers["x-request-id"]
    assert streamed_receipt["usage"]["completion_tokens"] > 0 and streamed_receipt["cost_usd"] > 0
    upstream.script({"json": completion() | {"compose_receipt": {"forged": True}}})
    external = post(gateway, gateway.key)
    assert "compose_receipt" not in external.json(), "external routes strip it, even when an upstream sends one"


async def _keys(db_url: str) -> list[Any]:
    db = open_database(db_url)
    await db.open()
    try:
        return list(await db.list_keys())
    finally:
        await db.close()
