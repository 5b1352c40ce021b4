"""The shared limiter (`ENGINE_REDIS=redis://…`, Redis or Valkey): one set of counters for every instance.

Admission and settlement are Lua scripts, so each is atomic on the server: one round trip checks every
limit of a key and, only if all pass, takes from the buckets and a concurrency slot. Time comes from the
server (`TIME`), so instances with skewed clocks still share one minute. Keys carry the gateway key id
as a hash tag (`lim:{id}:…`), so a cluster keeps one key's counters on one shard.

Admission is optimistic where that costs at most one request per instance beyond a limit (what the issue
allows): a key's request is admitted at once while Redis admitted the previous one and no check is
outstanding, and checked in the background; otherwise it waits for Redis.

Concurrency slots are leases (a sorted set scored by expiry): an instance that dies holding one frees
it after `limits.concurrency_lease_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.storage.base import Admission, KeyLimits, Periods, Refusal, StoreError

log = logging.getLogger("engine.storage.redis")

# KEYS: rpm bucket, tpm bucket, slots, day spend, month spend
# ARGV: rpm, tpm, concurrent, daily_usd, monthly_usd (0: none), tokens, slot, lease, day_ends, month_ends
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local daily, monthly, tokens = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local lease = tonumber(ARGV[8])
if daily > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') >= daily then
  return {'daily_usd', tostring(tonumber(ARGV[9]) - now)}
end
if monthly > 0 and tonumber(redis.call('GET', KEYS[5]) or '0') >= monthly then
  return {'monthly_usd', tostring(tonumber(ARGV[10]) - now)}
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= conc then return {'concurrent', '1'} end
end
local function level(key, cap)
  local v = redis.call('HMGET', key, 'l', 't')
  local l, ts = tonumber(v[1]) or cap, tonumber(v[2]) or now
  return math.min(cap, l + (now - ts) * cap / 60)
end
local rl, tl
if rpm > 0 then
  rl = level(KEYS[1], rpm)
  if rl < 1 then return {'rpm', tostring((1 - rl) * 60 / rpm)} end
end
if tpm > 0 then
  tl = level(KEYS[2], tpm)
  if tl <= 0 then return {'tpm', tostring((1 - tl) * 60 / tpm)} end
end
if rpm > 0 then
  redis.call('HSET', KEYS[1], 'l', tostring(rl - 1), 't', tostring(now))
  redis.call('EXPIRE', KEYS[1], 120)
end
if tpm > 0 then
  local left = tl - tokens
  redis.call('HSET', KEYS[2], 'l', tostring(left), 't', tostring(now))
  redis.call('EXPIRE', KEYS[2], 120 + math.ceil(math.max(0, -left) * 60 / tpm))
end
if conc > 0 then
  redis.call('ZADD', KEYS[3], now + lease, ARGV[7])
  redis.call('EXPIRE', KEYS[3], math.ceil(lease) + 60)
end
return {'', ''}
"""

# KEYS: tpm bucket, slots, day spend, month spend
# ARGV: tpm (0: none), tokens, slot ('' : none), cost, day_ends, month_ends
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tpm, tokens, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
if tpm > 0 and tokens ~= 0 then
  local v = redis.call('HMGET', KEYS[1], 'l', 't')
  local l, ts = tonumber(v[1]) or tpm, tonumber(v[2]) or now
  local left = math.min(tpm, l + (now - ts) * tpm / 60) - tokens
  redis.call('HSET', KEYS[1], 'l', tostring(left), 't', tostring(now))
  redis.call('EXPIRE', KEYS[1], 120 + math.ceil(math.max(0, -left) * 60 / tpm))
end
if cost > 0 then
  redis.call('INCRBYFLOAT', KEYS[3], ARGV[4])
  redis.call('EXPIREAT', KEYS[3], math.ceil(tonumber(ARGV[5])) + 86400)
  redis.call('INCRBYFLOAT', KEYS[4], ARGV[4])
  redis.call('EXPIREAT', KEYS[4], math.ceil(tonumber(ARGV[6])) + 86400)
end
return 1
"""


def _keys(key_id: str, periods: Periods) -> tuple[str, str, str, str, str]:
    tag = f"lim:{{{key_id}}}"
    return f"{tag}:rpm", f"{tag}:tpm", f"{tag}:slots", f"{tag}:usd:{periods.day}", f"{tag}:usd:{periods.month}"


def _n(value: float | None) -> str:
    return repr(value) if value is not None else "0"


class _Flight:
    """One key's admissions on this instance: whether Redis admitted the last one, and the one whose answer
    is still outstanding (admitted optimistically)."""

    __slots__ = ("pending", "trusted")

    def __init__(self) -> None:
        self.pending: asyncio.Future[Admission] | None = None
        self.trusted = False


def _retrieved(task: asyncio.Future[Admission]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("background admission check failed: %s", task.exception())


class RedisLimiter:
    def __init__(self, url: str, lease_seconds: float = 900.0) -> None:
        self.url = url
        self._lease = lease_seconds
        self._redis: Any = aioredis.Redis.from_url(url, decode_responses=True)
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        self._slots = 0
        self._instance = secrets.token_hex(8)  # slot ids must differ between instances
        self._flights: dict[str, _Flight] = {}

    async def admit(self, key_id: str, limits: KeyLimits, tokens: int) -> Admission:
        """Admit at once when Redis admitted this key's last request here and no answer is outstanding,
        and check in the background; otherwise wait for Redis. So at most one request per instance gets
        past a limit just crossed, and the common request pays no round trip."""
        slot = self._new_slot() if limits.concurrent else ""
        flight = self._flights.get(key_id)
        if flight is None:
            flight = self._flights[key_id] = _Flight()
        pending = flight.pending
        if flight.trusted and (pending is None or pending.done()):
            task = asyncio.ensure_future(self._remote(flight, key_id, limits, tokens, slot))
            task.add_done_callback(_retrieved)
            flight.pending = task
            return Admission(slot=slot or None)
        if pending is not None and not pending.done():
            await asyncio.wait([pending])  # keep this key's admissions in order behind the outstanding one
        return await self._remote(flight, key_id, limits, tokens, slot)

    def _new_slot(self) -> str:
        self._slots += 1
        return f"{self._instance}:{self._slots}"

    async def _remote(self, flight: _Flight, key_id: str, limits: KeyLimits, tokens: int, slot: str) -> Admission:
        periods = Periods.at(time.time())
        args = [
            _n(limits.rpm),
            _n(limits.tpm),
            _n(limits.concurrent),
            _n(limits.daily_usd),
            _n(limits.monthly_usd),
            str(tokens),
            slot,
            repr(self._lease),
            repr(periods.day_ends),
            repr(periods.month_ends),
        ]
        try:
            name, wait = await self._admit(keys=_keys(key_id, periods), args=args)
        except RedisError as exc:
            flight.trusted = False
            raise StoreError(f"ENGINE_REDIS: the limiter is unreachable: {type(exc).__name__}") from None
        flight.trusted = not name
        if name:
            value = getattr(limits, name)
            return Admission(Refusal(name, float(value), max(0.0, float(wait))))
        return Admission(slot=slot or None)

    async def settle(self, key_id: str, limits: KeyLimits, admission: Admission, tokens: int, cost_usd: float) -> None:
        periods = Periods.at(time.time())
        _rpm, tpm_key, slots, day, month = _keys(key_id, periods)
        args = [
            _n(limits.tpm),
            str(tokens),
            admission.slot or "",
            repr(cost_usd),
            repr(periods.day_ends),
            repr(periods.month_ends),
        ]
        await self._settle(keys=(tpm_key, slots, day, month), args=args)

    async def seed_spend(self, periods: Periods, day: Mapping[str, float], month: Mapping[str, float]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for spend, index, ends in ((day, 3, periods.day_ends), (month, 4, periods.month_ends)):
                for key_id, usd in spend.items():
                    pipe.set(_keys(key_id, periods)[index], repr(usd), nx=True, exat=math.ceil(ends) + 86_400)
            await pipe.execute()

    async def close(self) -> None:
        await self._redis.aclose()
