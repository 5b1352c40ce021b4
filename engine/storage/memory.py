"""The in-process limiter: exact for one process, and the default.

With several worker processes or instances, each counts alone (so the limits hold per process); set
`ENGINE_REDIS` to share the counters. Everything here runs on the event loop without awaiting, so one
admission is atomic with respect to every other request of the process. It is on every request's path:
one dict lookup finds all of a key's state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from engine.storage.base import ADMITTED, Admission, KeyLimits, Periods, Refusal

_SLOT = Admission(slot="held")  # in-process slots are a count: any admission holding one looks alike


class KeyState:
    """One key's counters. Buckets hold what is left of a minute's allowance, refilled continuously; the
    token bucket may go into debt (tokens counted after the fact), and admits nothing until it is out."""

    __slots__ = (
        "day",
        "day_ends",
        "day_usd",
        "in_flight",
        "month",
        "month_ends",
        "month_usd",
        "requests",
        "stamp",
        "tokens",
    )

    def __init__(self, limits: KeyLimits, now: float) -> None:
        self.requests = float(limits.rpm or 0)
        self.tokens = float(limits.tpm or 0)
        self.stamp = now
        self.in_flight = 0
        self.day = self.month = ""
        self.day_ends = self.month_ends = 0.0  # wall time; 0: the spend's periods are still to be found
        self.day_usd = self.month_usd = 0.0

    def refill(self, limits: KeyLimits, now: float) -> None:
        elapsed = now - self.stamp
        self.stamp = now
        rpm, tpm = limits.rpm, limits.tpm
        if rpm:
            requests = self.requests + elapsed * rpm / 60.0
            self.requests = requests if requests < rpm else rpm
        if tpm:
            tokens = self.tokens + elapsed * tpm / 60.0
            self.tokens = tokens if tokens < tpm else tpm

    def roll(self, now: float) -> None:
        """Count spend in the UTC day and month `now` (wall time) falls in: one comparison until the day ends."""
        if now >= self.day_ends:
            self.roll_to(Periods.at(now))

    def roll_to(self, periods: Periods) -> None:
        if self.day != periods.day:
            self.day, self.day_usd = periods.day, 0.0
        if self.month != periods.month:
            self.month, self.month_usd = periods.month, 0.0
        self.day_ends, self.month_ends = periods.day_ends, periods.month_ends


class MemoryLimiter:
    def __init__(self) -> None:
        self._keys: dict[str, KeyState] = {}

    def _state(self, key_id: str, limits: KeyLimits, now: float) -> KeyState:
        state = self._keys.get(key_id)
        if state is None:
            state = self._keys[key_id] = KeyState(limits, now)
        else:
            state.refill(limits, now)
        return state

    async def admit(self, key_id: str, limits: KeyLimits, tokens: int) -> Admission:
        state = self._state(key_id, limits, time.monotonic())
        if limits.daily_usd or limits.monthly_usd:
            now = time.time()
            state.roll(now)
            if limits.daily_usd and state.day_usd >= limits.daily_usd:
                return Admission(Refusal("daily_usd", limits.daily_usd, state.day_ends - now))
            if limits.monthly_usd and state.month_usd >= limits.monthly_usd:
                return Admission(Refusal("monthly_usd", limits.monthly_usd, state.month_ends - now))
        if limits.concurrent and state.in_flight >= limits.concurrent:
            return Admission(Refusal("concurrent", limits.concurrent, 1.0))
        if limits.rpm and state.requests < 1:
            return Admission(Refusal("rpm", limits.rpm, (1 - state.requests) * 60.0 / limits.rpm))
        if limits.tpm and state.tokens <= 0:
            return Admission(Refusal("tpm", limits.tpm, (1 - state.tokens) * 60.0 / limits.tpm))
        state.requests -= 1
        state.tokens -= tokens
        if limits.concurrent:
            state.in_flight += 1
            return _SLOT
        return ADMITTED

    def settle(self, key_id: str, limits: KeyLimits, admission: Admission, tokens: int, cost_usd: float) -> None:
        state = self._state(key_id, limits, time.monotonic())
        if admission.slot is not None:
            state.in_flight = max(0, state.in_flight - 1)
        state.tokens -= tokens
        if cost_usd:
            state.roll(time.time())
            state.day_usd += cost_usd
            state.month_usd += cost_usd

    async def seed_spend(self, periods: Periods, day: Mapping[str, float], month: Mapping[str, float]) -> None:
        for key_id in {*day, *month}:
            state = self._keys.setdefault(key_id, KeyState(KeyLimits(), time.monotonic()))
            state.roll_to(periods)
            state.day_usd = max(state.day_usd, day.get(key_id, 0.0))
            state.month_usd = max(state.month_usd, month.get(key_id, 0.0))

    async def close(self) -> None:
        return None
