"""Limits on every limiter backend (in-process always, Redis when it runs): admission never overshoots
under concurrency (tokens are post-paid: the estimate at admission, the rest when settled), refusals say
which limit and when to retry, and settling hands back what was taken."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from engine.limits import layered, refused
from engine.spec.models import Limits, LimitValues
from engine.storage.base import Admission, KeyLimits, Periods, Refusal

pytestmark = pytest.mark.anyio


async def burst(limiter: Any, key: str, limits: KeyLimits, n: int, tokens: int = 0) -> list[Admission]:
    return list(await asyncio.gather(*(limiter.admit(key, limits, tokens) for _ in range(n))))


async def test_requests_per_minute_admit_exactly_the_limit_under_a_burst(limiter: Any) -> None:
    limits = KeyLimits(rpm=5)
    results = await burst(limiter, "k-rpm", limits, 30)
    refusals = [a.refusal for a in results if a.refusal]
    assert len(results) - len(refusals) == 5
    assert {r.limit for r in refusals} == {"rpm"}
    assert all(0 < r.retry_after <= 12.5 for r in refusals), "one request comes back every 60/5 s"
    assert not (await limiter.admit("k-other", limits, 0)).refusal, "keys count apart"


async def test_concurrent_requests_hold_slots_until_settled(limiter: Any) -> None:
    limits = KeyLimits(concurrent=3)
    results = await burst(limiter, "k-conc", limits, 12)
    admitted = [a for a in results if not a.refusal]
    assert len(admitted) == 3 and {a.refusal.limit for a in results if a.refusal} == {"concurrent"}
    await _settle(limiter, "k-conc", limits, admitted[0], 0, 0.0)
    again = await burst(limiter, "k-conc", limits, 5)
    assert sum(not a.refusal for a in again) == 1, "one slot came back, one request got it"


async def test_tokens_per_minute_charge_the_estimate_then_the_rest(limiter: Any) -> None:
    limits = KeyLimits(tpm=1000)
    first = await limiter.admit("k-tpm", limits, 600)
    second = await limiter.admit("k-tpm", limits, 600)  # 400 left: admitted, the bucket goes into debt
    assert not first.refusal and not second.refusal
    later = [await limiter.admit("k-tpm", limits, 10) for _ in range(3)]
    assert sum(not a.refusal for a in later) <= 1, "at most one beyond the limit (a shared limiter's optimistic one)"
    last = later[-1].refusal
    assert last is not None and last.limit == "tpm" and last.retry_after > 0
    await _settle(limiter, "k-tpm", limits, first, -600, 0.0)  # it used nothing after all: refunded
    assert not (await limiter.admit("k-tpm", limits, 10)).refusal


async def test_spend_budgets_refuse_until_the_period_rolls_over(limiter: Any) -> None:
    limits = KeyLimits(daily_usd=1.0, monthly_usd=5.0)
    admission = await limiter.admit("k-usd", limits, 0)
    await _settle(limiter, "k-usd", limits, admission, 0, 1.25)
    refusal = [(await limiter.admit("k-usd", limits, 0)).refusal for _ in range(2)][-1]  # one may be let past
    assert refusal is not None and refusal.limit == "daily_usd"
    now = time.time()
    assert refusal.retry_after == pytest.approx(Periods.at(now).day_ends - now, abs=5)

    periods = Periods.at(now)
    await limiter.seed_spend(periods, {"k-seeded": 0.1}, {"k-seeded": 5.0})
    refusal = (await limiter.admit("k-seeded", limits, 0)).refusal
    assert refusal is not None and refusal.limit == "monthly_usd", "spend already in the ledger counts"


async def _settle(limiter: Any, key: str, limits: KeyLimits, admission: Admission, tokens: int, cost: float) -> None:
    work = limiter.settle(key, limits, admission, tokens, cost)
    if work is not None:
        await work


def test_limits_layer_defaults_then_tier_then_the_key() -> None:
    spec = Limits(
        defaults=LimitValues(rpm=100, concurrent=8),
        default_tier="free",
        tiers={"free": LimitValues(rpm=10, daily_usd=1.0), "pro": LimitValues(rpm=1000)},
    )
    assert layered(spec, None, {}) == KeyLimits(rpm=10, concurrent=8, daily_usd=1.0), "default_tier applies"
    assert layered(spec, "pro", {}) == KeyLimits(rpm=1000, concurrent=8)
    assert layered(spec, "pro", {"concurrent": 2, "tpm": 500.0}) == KeyLimits(rpm=1000, tpm=500, concurrent=2)
    assert not layered(Limits(), None, {}).any(), "no limits configured: nothing to check"


def test_refusals_are_openai_shaped_429s_naming_the_limit() -> None:
    rate = refused(Refusal("rpm", 60, 0.4))
    assert (rate.status, rate.type, rate.code, rate.headers["retry-after"]) == (
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        "1",
    )
    assert "requests per minute (rpm): limit 60" in rate.message
    budget = refused(Refusal("monthly_usd", 10.0, 3600.2))
    assert (budget.status, budget.code, budget.headers["retry-after"]) == (429, "budget_exceeded", "3601")
    assert "monthly spend budget" in budget.message and "UTC month" in budget.message
