"""Health: a circuit breaker and a recent error rate per provider, and the health document that shows them.

A provider's breaker opens after `breaker.failures` attempts in a row failed in a way that says the
provider is in trouble (`counts_against`: it could not be reached, timed out, dropped the connection,
answered garbage or a 5xx; never a 4xx, which is about the request or our quota, nor the gateway's own
pool or the client's deadline). While open, the attempt loop skips it without using an attempt. After
`breaker.cooldown` seconds it is half-open: exactly one request probes it; success closes it, failure opens
it for another cool-down. Time is the event loop's clock, so tests drive breakers on a virtual clock.

The error rate is counted in `WINDOW_BUCKETS` time buckets over `breaker.window` seconds: recording an
attempt is two integer additions, whatever the traffic.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Any

from engine.errors import Failure, GatewayError, Kind
from engine.spec.models import BreakerPolicy

WINDOW_BUCKETS = 10

# Failures that say the provider itself is in trouble.
_PROVIDER_TROUBLE = frozenset(
    {
        Kind.REFUSED,
        Kind.CONNECT_TIMEOUT,
        Kind.FIRST_BYTE_TIMEOUT,
        Kind.IDLE_TIMEOUT,
        Kind.TOTAL_TIMEOUT,
        Kind.DROPPED,
        Kind.INVALID,
    }
)


def counts_against(failure: Failure) -> bool:
    if failure.kind is Kind.STATUS:
        return failure.status is not None and failure.status >= 500
    return failure.kind in _PROVIDER_TROUBLE


class Circuit(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """One provider's circuit and its recent attempts."""

    __slots__ = ("_bucket", "_counts", "_policy", "_width", "failures_in_row", "opened_at", "probing", "state")

    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self.state = Circuit.CLOSED
        self.failures_in_row = 0
        self.opened_at = 0.0
        self.probing = False  # the half-open probe is in flight
        self._width = policy.window / WINDOW_BUCKETS
        self._bucket = 0  # index of the newest bucket (time // width)
        self._counts = [[0, 0] for _ in range(WINDOW_BUCKETS)]  # per bucket: attempts, failures

    def admit(self, now: float) -> bool:
        """May a request try this provider now? In half-open, only the first asker may (it is the probe)."""
        if self.state is Circuit.CLOSED:
            return True
        if self.state is Circuit.OPEN:
            if now < self.opened_at + self._policy.cooldown:
                return False
            self.state = Circuit.HALF_OPEN
        if self.probing:
            return False
        self.probing = True
        return True

    def retry_in(self, now: float) -> float:
        """Seconds until an open circuit lets a probe through."""
        return max(0.0, self.opened_at + self._policy.cooldown - now) if self.state is Circuit.OPEN else 0.0

    def succeeded(self, now: float) -> None:
        self._count(now, failed=False)
        self.failures_in_row = 0
        if self.state is not Circuit.CLOSED:
            self.state, self.probing = Circuit.CLOSED, False

    def failed(self, now: float, failure: Failure, probe: bool) -> None:
        """Record a failed attempt. One that is not the provider's fault (a 4xx) says it is up: as a success."""
        if not counts_against(failure):
            self.succeeded(now)
            return
        self._count(now, failed=True)
        self.failures_in_row += 1
        if probe or self.failures_in_row >= self._policy.failures:
            self.state, self.opened_at, self.probing = Circuit.OPEN, now, False

    def released(self, probe: bool) -> None:
        """An attempt ended without an outcome (cancelled, or never sent): a probe lets another one go."""
        if probe:
            self.probing = False

    def _count(self, now: float, failed: bool) -> None:
        bucket = int(now // self._width)
        if bucket != self._bucket:
            for stale in range(max(self._bucket + 1, bucket - WINDOW_BUCKETS + 1), bucket + 1):
                self._counts[stale % WINDOW_BUCKETS] = [0, 0]
            self._bucket = bucket
        counts = self._counts[bucket % WINDOW_BUCKETS]
        counts[0] += 1
        counts[1] += failed

    def recent(self, now: float) -> tuple[int, int]:
        """Attempts and failures over the last window."""
        newest = int(now // self._width)
        attempts = failures = 0
        for bucket in range(max(self._bucket - WINDOW_BUCKETS + 1, newest - WINDOW_BUCKETS + 1), self._bucket + 1):
            counts = self._counts[bucket % WINDOW_BUCKETS]
            attempts, failures = attempts + counts[0], failures + counts[1]
        return attempts, failures


class Health:
    """Every provider's breaker, and the document the health route answers."""

    def __init__(self, policy: BreakerPolicy, providers: list[str]) -> None:
        self.policy = policy
        self.breakers = {provider: Breaker(policy) for provider in providers}

    def breaker(self, provider: str) -> Breaker:
        found = self.breakers.get(provider)
        if found is None:
            found = self.breakers[provider] = Breaker(self.policy)
        return found

    def reset(self) -> None:
        for provider in self.breakers:
            self.breakers[provider] = Breaker(self.policy)

    def document(self, providers: list[str], pools: dict[str, Any]) -> dict[str, Any]:
        """Each listed provider's circuit, recent error rate and pool use. Nothing secret: no URL, no key."""
        now = asyncio.get_running_loop().time()
        rows = []
        for provider in providers:
            breaker = self.breaker(provider)
            if breaker.state is Circuit.OPEN and breaker.retry_in(now) == 0:
                circuit = Circuit.HALF_OPEN  # due for its probe
            else:
                circuit = breaker.state
            attempts, failures = breaker.recent(now)
            row: dict[str, Any] = {
                "id": provider,
                "circuit": circuit.value,
                "window_seconds": self.policy.window,
                "attempts": attempts,
                "failures": failures,
                "error_rate": round(failures / attempts, 4) if attempts else 0.0,
                "failures_in_row": breaker.failures_in_row,
            }
            if circuit is Circuit.OPEN:
                row["retry_in_seconds"] = round(breaker.retry_in(now), 3)
            pool = pools.get(provider)
            if pool is not None:
                row["connections"] = {"in_use": pool.in_use, "limit": pool.size}
            rows.append(row)
        open_count = sum(1 for r in rows if r["circuit"] == Circuit.OPEN.value)
        status = "ok" if open_count == 0 else "down" if open_count == len(rows) else "degraded"
        return {"status": status, "providers": rows}


def unavailable(public_id: str, retry_in: float) -> GatewayError:
    """Every candidate of the model has an open circuit: fail fast, and say when to come back."""
    seconds = max(1, round(retry_in + 0.4999))
    return GatewayError(
        503,
        f"Every provider serving `{public_id}` is failing right now, so the gateway is not sending it more"
        f" requests for a moment. Retry in {seconds} s.",
        type="api_error",
        code="providers_unavailable",
        headers={"retry-after": str(seconds)},
    )
