"""The shared limiter (Redis) leases allowance: a busy key costs a round trip per sync, not per request,
two instances together never admit past a limit, and what one instance holds unused is at most its
`lease_share` of the limit, handed back when it is not needed. (Skipped, saying why, without Redis.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from engine.storage.base import Admission, KeyLimits
from engine.storage.redis import RedisLimiter

pytestmark = pytest.mark.anyio


@pytest.fixture
async def redis_url(redis_server: Any) -> AsyncIterator[str]:
    url = str(redis_server.url(5))
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield url


async def burst(limiter: RedisLimiter, key: str, limits: KeyLimits, n: int) -> list[Admission]:
    return list(await asyncio.gather(*(limiter.admit(key, limits, 0) for _ in range(n))))


async def scripts_run(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


async def test_a_busy_key_costs_a_round_trip_per_sync_not_per_request(redis_url: str) -> None:
    limiter = RedisLimiter(redis_url, sync_seconds=0.05)
    limits = KeyLimits(rpm=1_000_000, tpm=10**9, concurrent=1000, daily_usd=1e6, monthly_usd=1e6)
    before = await scripts_run(redis_url)
    try:
        for _ in range(300):
            admission = await limiter.admit("k-busy", limits, 20)
            assert admission.refusal is None
            limiter.settle("k-busy", limits, admission, 5, 0.0001)
    finally:
        await limiter.close()
    syncs = await scripts_run(redis_url) - before
    assert syncs <= 30, f"{syncs} round trips for 300 requests: the lease doubles with use"


async def test_two_instances_never_pass_the_limit_and_hold_at_most_their_share(redis_url: str) -> None:
    a, b = RedisLimiter(redis_url, sync_seconds=0.02), RedisLimiter(redis_url, sync_seconds=0.02)
    limits = KeyLimits(concurrent=20)  # lease_share 0.1: an instance keeps at most 2 slots it does not use
    try:
        on_a = await burst(a, "k", limits, 20)
        assert all(x.refusal is None for x in on_a)
        assert [x.refusal.limit for x in await burst(b, "k", limits, 5) if x.refusal] == ["concurrent"] * 5
        for admission in on_a:
            a.settle("k", limits, admission, 0, 0.0)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        deadline = time.monotonic() + 10
        while await client.hget("lim:{k}:slots", f"n:{a._instance}") != "2" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # A hands back, at its next sync, all but the 2 it may keep
        await client.aclose()
        assert sum(x.refusal is None for x in await burst(b, "k", limits, 20)) == 18
        await a.close()  # a stopping instance hands back everything it holds
        assert sum(x.refusal is None for x in await burst(b, "k", limits, 5)) == 2
    finally:
        await a.close()
        await b.close()


async def test_many_keys_share_one_round_trip_per_tick(redis_url: str) -> None:
    a, b = RedisLimiter(redis_url, sync_seconds=0.02), RedisLimiter(redis_url, sync_seconds=0.02)
    limits = KeyLimits(daily_usd=1.0)
    keys = [f"k-spend-{i}" for i in range(20)]
    rounds: list[int] = []
    one_round = a._round

    async def counted(waiting: Any) -> None:
        rounds.append(len(waiting))
        await one_round(waiting)

    a._round = counted  # type: ignore[method-assign]
    try:
        admitted = await asyncio.gather(*(a.admit(key, limits, 0) for key in keys))
        assert rounds == [20], "20 keys' first requests, one round trip"
        for key, admission in zip(keys, admitted, strict=True):
            a.settle(key, limits, admission, 0, 1.5)  # each key spends past its budget on A
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            refusals = [(await b.admit(key, limits, 0)).refusal for key in keys]
            if all(r is not None and r.limit == "daily_usd" for r in refusals):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"B still admits: {refusals}")
        assert rounds[1] == 20, f"A's next tick settled all 20 keys in one round trip: {rounds}"
    finally:
        await a.close()
        await b.close()
