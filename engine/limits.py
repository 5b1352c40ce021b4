"""Limits: per-key requests and tokens per minute, requests in flight, and daily/monthly spend budgets.

routes.toml `[limits]` holds the defaults and named tiers; a key carries its tier and its own values
(`engine keys create|update`). `Gatekeeper.admit` runs once per proxied request, after validation and
before the first upstream attempt; its `release` runs when the trip is recorded (for a stream, when it
ends), handing the concurrency slot back and charging the tokens and cost the request really used.

Tokens are only known afterwards, so admission charges an estimate (~4 bytes of request body per token)
and the settlement charges the rest: a token or spend limit lets through the requests already in flight
when it is crossed, then refuses until it has room again (tokens) or the period rolls over (spend).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from engine.errors import GatewayError
from engine.spec.models import LIMIT_NAMES, LimitValues
from engine.spec.models import Limits as LimitsSpec
from engine.storage.base import Admission, KeyLimits, KeyRecord, Limiter, Refusal, StoreError, UsageRow

log = logging.getLogger("engine.limits")

_WHAT = {
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
    "concurrent": "concurrent requests",
    "daily_usd": "daily spend budget (USD)",
    "monthly_usd": "monthly spend budget (USD)",
}
_BUDGETS = frozenset({"daily_usd", "monthly_usd"})


def layered(spec: LimitsSpec, tier: str | None, own: dict[str, float]) -> KeyLimits:
    """Defaults, then the tier (the key's, else `default_tier`), then the key's own values."""
    values: dict[str, Any] = spec.defaults.model_dump(exclude_none=True)
    tier_values = spec.tiers.get(tier or spec.default_tier or "")
    if tier_values is not None:
        values |= tier_values.model_dump(exclude_none=True)
    values |= {name: value for name, value in own.items() if name in LIMIT_NAMES}
    for name in ("rpm", "tpm", "concurrent"):
        if name in values:
            values[name] = int(values[name])
    return KeyLimits(**values)


def check_limit_values(values: dict[str, float]) -> None:
    """Validate a key's own limit values as routes.toml's would be (ValueError naming the problem)."""
    LimitValues.model_validate({k: v for k, v in values.items() if v >= 0})


def refused(refusal: Refusal) -> GatewayError:
    wait = max(1, math.ceil(refusal.retry_after))
    what = _WHAT[refusal.limit]
    value = f"{refusal.value:g}"
    if refusal.limit in _BUDGETS:
        period = "day" if refusal.limit == "daily_usd" else "month"
        return GatewayError(
            429,
            f"This key has used its {what} of {value}. It resets when the UTC {period} rolls over, in {wait} s;"
            " ask the gateway operator to raise the budget to continue sooner.",
            type="insufficient_quota",
            code="budget_exceeded",
            headers={"retry-after": str(wait)},
        )
    return GatewayError(
        429,
        f"Rate limit reached for this key on {what} ({refusal.limit}): limit {value}. Retry in {wait} s.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"retry-after": str(wait)},
    )


class Gatekeeper:
    def __init__(self, spec: LimitsSpec, limiter: Limiter) -> None:
        self.spec = spec
        self.limiter = limiter
        self._memo: dict[int, tuple[KeyRecord, KeyLimits | None]] = {}  # by the (cached) record's id

    def limits_of(self, key: KeyRecord) -> KeyLimits | None:
        """The key's layered limits. Records are cached by auth for key_cache_seconds, so this is computed
        about once per key and second; a changed record (keys update) is a new object. None: no limits."""
        found = self._memo.get(id(key))
        if found is not None and found[0] is key:
            return found[1]
        if len(self._memo) > 10_000:
            self._memo.clear()
        layers = layered(self.spec, key.tier, dict(key.limits))
        limits = layers if layers.any() else None
        self._memo[id(key)] = (key, limits)
        return limits

    async def admit(self, key: KeyRecord, estimate: int) -> Callable[[UsageRow | None], None] | None:
        """Admit a request of `key` or raise the 429; returns the release to call once it is done."""
        limits = self.limits_of(key)
        if limits is None:
            return None
        try:
            admission = await self.limiter.admit(key.id, limits, estimate)
        except StoreError as exc:
            log.error("limiter unavailable: %s", exc)
            raise GatewayError(
                503,
                "The gateway cannot check this key's limits right now. Retry shortly.",
                type="api_error",
                code="limiter_unavailable",
                headers={"retry-after": "1"},
            ) from None
        if admission.refusal is not None:
            raise refused(admission.refusal)
        key_id = key.id

        settle = self.limiter.settle

        def release(row: UsageRow | None) -> None:
            if row is None:
                settle(key_id, limits, admission, -estimate, 0.0)
            else:
                settle(key_id, limits, admission, row.prompt_tokens + row.completion_tokens - estimate, row.cost_usd)

        return release

    async def close(self) -> None:
        await self.limiter.close()


__all__ = ["Admission", "Gatekeeper", "check_limit_values", "layered", "refused"]
