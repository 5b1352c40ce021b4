"""The in-process limiter: exact for one process, and the default.

With several worker processes or instances, each counts alone (so the limits hold per process); set
`ENGINE_REDIS` to share the counters. Everything here runs on the event loop without awaiting, so one
admission is atomic with respect to every other request of the process.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping

from engine.storage.base import Admission, KeyLimits, Periods, Refusal


class Bucket:
    """A token bucket of `capacity`, refilled continuously over a minute. It may go into debt (tokens
    counted after the fact); while it is at or below zero nothing is admitted."""

    __slots__ = ("level", "stamp")

    def __init__(self, capacity: float, now: float) -> None:
        self.level = capacity
        self.stamp = now

    def refill(self, capacity: float, now: float) -> float:
        self.level = min(capacity, self.level + (now - self.stamp) * capacity / 60.0)
        self.stamp = now
        return self.level


class MemoryLimiter:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._in_flight: dict[str, int] = {}
        self._spend: dict[tuple[str, str], float] = {}
        self._slots = itertools.count()

    def _bucket(self, key_id: str, name: str, capacity: float, now: float) -> Bucket:
        bucket = self._buckets.get((key_id, name))
        if bucket is None:
            bucket = self._buckets[(key_id, name)] = Bucket(capacity, now)
        bucket.refill(capacity, now)
        return bucket

    async def admit(self, key_id: str, limits: KeyLimits, tokens: int) -> Admission:
        refusal = self.check(key_id, limits, time.monotonic(), time.time())
        if refusal is not None:
            return Admission(refusal)
        if limits.rpm:
            self._buckets[(key_id, "rpm")].level -= 1
        if limits.tpm:
            self._buckets[(key_id, "tpm")].level -= tokens
        slot = None
        if limits.concurrent:
            self._in_flight[key_id] = self._in_flight.get(key_id, 0) + 1
            slot = str(next(self._slots))
        return Admission(slot=slot)

    def check(self, key_id: str, limits: KeyLimits, mono: float, now: float) -> Refusal | None:
        periods = Periods.at(now) if limits.daily_usd or limits.monthly_usd else None
        if periods is not None:
            for name, budget, period, ends in (
                ("daily_usd", limits.daily_usd, periods.day, periods.day_ends),
                ("monthly_usd", limits.monthly_usd, periods.month, periods.month_ends),
            ):
                if budget and self._spend.get((key_id, period), 0.0) >= budget:
                    return Refusal(name, budget, ends - now)
        if limits.concurrent and self._in_flight.get(key_id, 0) >= limits.concurrent:
            return Refusal("concurrent", limits.concurrent, 1.0)
        if limits.rpm:
            level = self._bucket(key_id, "rpm", limits.rpm, mono).level
            if level < 1:
                return Refusal("rpm", limits.rpm, (1 - level) * 60.0 / limits.rpm)
        if limits.tpm:
            level = self._bucket(key_id, "tpm", limits.tpm, mono).level
            if level <= 0:
                return Refusal("tpm", limits.tpm, (1 - level) * 60.0 / limits.tpm)
        return None

    def settle(self, key_id: str, limits: KeyLimits, admission: Admission, tokens: int, cost_usd: float) -> None:
        if admission.slot is not None:
            self._in_flight[key_id] = max(0, self._in_flight.get(key_id, 0) - 1)
        if limits.tpm and tokens:
            self._bucket(key_id, "tpm", limits.tpm, time.monotonic()).level -= tokens
        if cost_usd:
            periods = Periods.at(time.time())
            for period in (periods.day, periods.month):
                self._spend[(key_id, period)] = self._spend.get((key_id, period), 0.0) + cost_usd

    async def seed_spend(self, periods: Periods, day: Mapping[str, float], month: Mapping[str, float]) -> None:
        for period, spend in ((periods.day, day), (periods.month, month)):
            for key_id, usd in spend.items():
                self._spend.setdefault((key_id, period), usd)

    async def close(self) -> None:
        return None
