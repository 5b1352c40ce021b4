"""The shared limiter (`ENGINE_REDIS=redis://…`, Redis or Valkey): one set of counters for every instance.

A Redis round trip costs the gateway more CPU than the rest of a limit check, so an instance does not ask
Redis per request. It *leases* allowance instead: requests (rpm), tokens (tpm) and concurrency slots are
taken from the shared counters in advance, in one Lua script per key (atomic on the server), and spent
locally, synchronously on the event loop, like the in-process limiter. Nothing is admitted that was not
taken from the shared counters first, so the instances together never go past an rpm or concurrency
limit; what an instance holds unused is capped at `lease_share` of the limit (below one request or slot,
it leases nothing and every admission waits for Redis, so small limits are exact) and handed back once
the key goes quiet.

The same script settles what the instance owes since its last sync: tokens used beyond the estimate,
slots released, spend. A sync runs when a request finds the lease empty (it waits for it; requests of
the key arriving meanwhile join that one sync, and keys needing one in the same turn of the event loop
share its round trip), and from a ticker every `sync_seconds`, one pipelined round trip for every key
due (nobody waits for it): a key with a spend budget every tick it was used, so a budget spent on one
instance is seen by the others within about `sync_seconds` (spend and tokens are post-paid anyway: the
requests in flight when a limit is crossed complete); a key whose lease would not last another tick, to
top it up ahead; any other used key every ten ticks.

Time comes from the server (`TIME`), so instances with skewed clocks share one minute. Keys carry the
gateway key id as a hash tag (`lim:{id}:…`), so a cluster keeps one key's counters on one shard. Slots
are counted per instance, each count with a lease the instance renews while it runs: an instance that
dies holding slots frees them after `concurrency_lease_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from engine.storage.base import Admission, KeyLimits, Periods, Refusal, StoreError

log = logging.getLogger("engine.storage.redis")

# KEYS: rpm bucket, tpm bucket, slot counts, day spend, month spend
# ARGV: 1-5 rpm, tpm, concurrent, daily_usd, monthly_usd (0: none); 6 instance; 7 lease seconds;
#       8-9 day_ends, month_ends; 10-12 requests, tokens, slots to lease; 13-15 requests, tokens (negative:
#       used beyond the lease), slots handed back; 16 spend to add; 17… the tokens of each request to admit now.
# Returns: admitted, refused limit ('' none), retry after, requests, tokens, slots leased, day and month spend.
_SYNC = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local daily, monthly = tonumber(ARGV[4]), tonumber(ARGV[5])
local me, lease = ARGV[6], tonumber(ARGV[7])
local want_r, want_t, want_s = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local back_r, back_t, back_s, cost = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
local n = #ARGV - 16

local day = tonumber(redis.call('GET', KEYS[4]) or '0')
local month = tonumber(redis.call('GET', KEYS[5]) or '0')
if cost > 0 then
  day = tonumber(redis.call('INCRBYFLOAT', KEYS[4], ARGV[16]))
  redis.call('EXPIREAT', KEYS[4], math.ceil(tonumber(ARGV[8])) + 86400)
  month = tonumber(redis.call('INCRBYFLOAT', KEYS[5], ARGV[16]))
  redis.call('EXPIREAT', KEYS[5], math.ceil(tonumber(ARGV[9])) + 86400)
end

local mine, others = 0, 0
local slots = conc > 0 or back_s > 0
if slots then
  local fields = redis.call('HGETALL', KEYS[3])
  local counts, ends = {}, {}
  for i = 1, #fields, 2 do
    local kind, who = string.sub(fields[i], 1, 1), string.sub(fields[i], 3)
    if kind == 'n' then counts[who] = tonumber(fields[i + 1]) else ends[who] = tonumber(fields[i + 1]) end
  end
  for who, count in pairs(counts) do
    if who == me then
      mine = math.max(0, count - back_s)
    elseif (ends[who] or 0) < now then
      redis.call('HDEL', KEYS[3], 'n:' .. who, 'x:' .. who)
    else
      others = others + count
    end
  end
end
local free = conc - mine - others

local function level(key, cap, back)
  local v = redis.call('HMGET', key, 'l', 't')
  local l, ts = tonumber(v[1]) or cap, tonumber(v[2]) or now
  return math.min(cap, l + (now - ts) * cap / 60 + back)
end
local rl, tl = 0, 0
if rpm > 0 then rl = level(KEYS[1], rpm, back_r) end
if tpm > 0 then tl = level(KEYS[2], tpm, back_t) end

local k, name, wait = n, '', 0
if n > 0 then
  if daily > 0 and day >= daily then
    k, name, wait = 0, 'daily_usd', tonumber(ARGV[8]) - now
  elseif monthly > 0 and month >= monthly then
    k, name, wait = 0, 'monthly_usd', tonumber(ARGV[9]) - now
  else
    if conc > 0 and free < k then k, name, wait = math.max(0, free), 'concurrent', 1 end
    if rpm > 0 and math.floor(rl) < k then
      k, name, wait = math.floor(rl), 'rpm', (1 + math.floor(rl) - rl) * 60 / rpm
    end
    if tpm > 0 and tl <= 0 then k, name, wait = 0, 'tpm', (1 - tl) * 60 / tpm end
  end
end
local got_r, got_t, got_s = 0, 0, 0
if name ~= 'daily_usd' and name ~= 'monthly_usd' then
  for i = 1, k do tl = tl - tonumber(ARGV[16 + i]) end
  rl, free = rl - k, free - k
  if rpm > 0 then got_r = math.max(0, math.min(want_r, math.floor(rl))) rl = rl - got_r end
  if tpm > 0 then got_t = math.max(0, math.min(want_t, math.floor(tl))) tl = tl - got_t end
  if conc > 0 then got_s = math.max(0, math.min(want_s, free)) end
  mine = mine + k + got_s
end

if rpm > 0 then
  redis.call('HSET', KEYS[1], 'l', tostring(rl), 't', tostring(now))
  redis.call('EXPIRE', KEYS[1], 120)
end
if tpm > 0 then
  redis.call('HSET', KEYS[2], 'l', tostring(tl), 't', tostring(now))
  redis.call('EXPIRE', KEYS[2], 120 + math.ceil(math.max(0, -tl) * 60 / tpm))
end
if slots then
  if mine > 0 then
    redis.call('HSET', KEYS[3], 'n:' .. me, mine, 'x:' .. me, tostring(now + lease))
    redis.call('EXPIRE', KEYS[3], math.ceil(lease) + 60)
  else
    redis.call('HDEL', KEYS[3], 'n:' .. me, 'x:' .. me)
  end
end
return {k, name, tostring(wait), got_r, got_t, got_s, tostring(day), tostring(month)}
"""

_HOLDING = Admission(slot="held")  # slots are counts here too: any admission holding one looks alike
_QUIET = 1.0  # seconds unused, nothing in flight, after which a key hands back what it holds
_RELAXED = 10  # ticks a used key without a budget or a short lease may go between syncs


def _keys(key_id: str, periods: Periods) -> tuple[str, str, str, str, str]:
    tag = f"lim:{{{key_id}}}"
    return f"{tag}:rpm", f"{tag}:tpm", f"{tag}:slots", f"{tag}:usd:{periods.day}", f"{tag}:usd:{periods.month}"


def _n(value: float | None) -> str:
    return repr(value) if value is not None else "0"


class _Key:
    """One key on this instance: what it holds of the shared allowance, what it owes since the last sync,
    and the requests waiting for the sync in progress."""

    __slots__ = (
        "cost",
        "day_ends",
        "day_usd",
        "in_flight",
        "limits",
        "month_ends",
        "month_usd",
        "requests",
        "slots",
        "synced",
        "syncing",
        "tokens",
        "used",
        "used_tokens",
        "waiters",
    )

    def __init__(self, limits: KeyLimits) -> None:
        self.limits = limits
        self.requests = 0  # rpm allowance leased, unused
        self.tokens = 0  # tpm allowance leased, unused; negative: used beyond it, charged at the next sync
        self.slots = 0  # concurrency slots leased, not in use
        self.in_flight = 0  # slots in use
        self.cost = 0.0  # spend not yet added to the shared total
        # When the UTC day and month of the spend figures end (wall time); 0: no figures yet.
        self.day_ends = self.month_ends = 0.0
        self.day_usd = self.month_usd = 0.0  # the shared spend at the last sync
        self.synced = -math.inf  # monotonic time of the last sync
        self.syncing = False
        self.used = self.used_tokens = 0  # admitted since the last sync: the next lease's size
        self.waiters: list[tuple[asyncio.Future[Admission], int]] = []

    def local(self, limits: KeyLimits, tokens: int, fresh: float) -> Admission | None:
        """Admit from what this instance holds, or refuse a spent budget; None: ask Redis."""
        if self.waiters or self.synced < fresh:
            return None
        if limits.daily_usd or limits.monthly_usd:
            now = time.time()
            if now >= self.day_ends:  # the spend figures are another day's (or none yet): Redis has today's
                return None
            if limits.daily_usd and self.day_usd + self.cost >= limits.daily_usd:
                return Admission(Refusal("daily_usd", limits.daily_usd, self.day_ends - now))
            if limits.monthly_usd and self.month_usd + self.cost >= limits.monthly_usd:
                return Admission(Refusal("monthly_usd", limits.monthly_usd, self.month_ends - now))
        if (
            (limits.concurrent and self.slots < 1)
            or (limits.rpm and self.requests < 1)
            or (limits.tpm and self.tokens <= 0)
        ):
            return None
        self.requests -= 1 if limits.rpm else 0
        self.tokens -= tokens if limits.tpm else 0
        self.used += 1
        self.used_tokens += tokens
        if limits.concurrent:
            self.slots -= 1
            self.in_flight += 1
            return _HOLDING
        return Admission()

    def holds(self) -> bool:
        """Anything leased or owed, to hand back before forgetting the key."""
        return bool(self.requests or self.tokens or self.slots or self.cost)

    def owe(self, requests: int, tokens: int, slots: int, cost: float) -> None:
        """Add to what this instance holds (negative: hand it over to a sync)."""
        self.requests += requests
        self.tokens += tokens
        self.slots += slots
        self.cost += cost

    def due(self, now: float, every: float, share: float, lease: float) -> bool:
        """Whether the ticker should sync this key now. A key with a budget syncs every tick it was used
        (so spend is seen across instances within a tick); one whose lease would not cover another tick
        of the same use tops it up ahead; the rest sync at most every `_RELAXED` ticks."""
        limits = self.limits
        if self.surplus(share) or (self.in_flight and now - self.synced > lease / 3):
            return True
        if (limits.daily_usd or limits.monthly_usd) and (self.used or self.cost):
            return True
        if (
            (limits.rpm and self.requests < self.used)
            or (limits.tpm and self.tokens < self.used_tokens)
            or (limits.concurrent and self.slots < self.used)
        ):
            return True
        return bool(self.used or self.cost) and now - self.synced > _RELAXED * every

    def surplus(self, share: float) -> bool:
        """Holding more than the lease cap (slots released, tokens refunded), or owing tokens."""
        limits = self.limits
        return (
            self.tokens < 0
            or self.slots > _cap(limits.concurrent, share)
            or self.requests > _cap(limits.rpm, share)
            or self.tokens > _cap(limits.tpm, share)
        )


def _cap(limit: int | None, share: float) -> int:
    """The most of `limit` an instance may hold unused."""
    return int(limit * share) if limit else 0


class RedisLimiter:
    def __init__(
        self, url: str, lease_seconds: float = 900.0, sync_seconds: float = 0.1, lease_share: float = 0.1
    ) -> None:
        self.url = url
        self._lease = lease_seconds
        self._every = sync_seconds
        self._share = lease_share
        self._redis: Any = aioredis.Redis.from_url(url, decode_responses=True)
        self._sync_script = self._redis.register_script(_SYNC)
        self._instance = secrets.token_hex(8)  # slot counts are per instance
        self._keys: dict[str, _Key] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._syncs: set[asyncio.Task[None]] = set()
        self._soon: list[tuple[str, _Key, bool]] = []  # keys to sync in the next turn of the loop
        self._loaded = False  # the script is in the server's cache (pipelines cannot load it themselves)

    # ------------------------------------------------------------------ the request path (no round trip)

    async def admit(self, key_id: str, limits: KeyLimits, tokens: int) -> Admission:
        key = self._keys.get(key_id)
        if key is None:
            key = self._keys[key_id] = _Key(limits)
            self._tick_later()
        key.limits = limits
        found = key.local(limits, tokens, time.monotonic() - _RELAXED * self._every - _QUIET)
        if found is not None:
            return found
        waiter: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        key.waiters.append((waiter, tokens))
        if not key.syncing:
            self._sync_soon(key_id, key)
        return await waiter

    def settle(self, key_id: str, limits: KeyLimits, admission: Admission, tokens: int, cost_usd: float) -> None:
        """Hand the slot back and note what is owed; the next sync tells Redis."""
        key = self._keys.get(key_id)
        if key is None:  # the key went quiet and was handed back while this request ran: owe it directly
            key = self._keys[key_id] = _Key(limits)
            self._tick_later()
        if admission.slot is not None:
            key.in_flight = max(0, key.in_flight - 1)
            key.slots += 1
        key.tokens -= tokens
        key.used_tokens += tokens  # the next lease covers what requests really use, not just their estimates
        key.cost += cost_usd

    # ------------------------------------------------------------------ syncing with Redis

    def _sync_soon(self, key_id: str, key: _Key) -> None:
        """Sync `key` for its waiting request, together with every other key that needs it in this turn
        of the event loop (a burst over many keys is one round trip)."""
        key.syncing = True
        self._soon.append((key_id, key, False))
        if len(self._soon) == 1:
            asyncio.get_running_loop().call_soon(self._sync_now)

    def _sync_now(self) -> None:
        batch, self._soon = self._soon, []
        self._start_sync(batch)

    def _start_sync(self, batch: list[tuple[str, _Key, bool]]) -> None:
        """Sync these keys (key id, state, whether to hand everything back) in one round trip."""
        for _, key, _ in batch:
            key.syncing = True
        task = asyncio.ensure_future(self._sync(batch))
        self._syncs.add(task)
        task.add_done_callback(self._syncs.discard)

    async def _sync(self, batch: list[tuple[str, _Key, bool]]) -> None:
        """Sync rounds until no request of these keys waits (those arriving during one round wait for the
        next). A failure reaches the waiting requests (their 503); what is owed stays owed, for the next tick."""
        while batch:
            waiting = [(key_id, key, key.waiters, final and not key.waiters) for key_id, key, final in batch]
            for _, key, _, _ in waiting:
                key.waiters = []
            try:
                await self._round(waiting)
            except StoreError as exc:
                log.warning("syncing %d key(s) with the shared limiter failed: %s", len(waiting), exc)
                for key_id, key, _, final in waiting:
                    key.syncing = False
                    if final:  # handed back nothing: keep it, the next tick tries again
                        self._keys.setdefault(key_id, key)
                        self._tick_later()
                return
            batch = []
            for key_id, key, _, _ in waiting:
                if key.waiters:
                    batch.append((key_id, key, False))
                else:
                    key.syncing = False

    async def _round(self, waiting: list[tuple[str, _Key, list[tuple[asyncio.Future[Admission], int]], bool]]) -> None:
        periods = Periods.at(time.time())
        calls = [self._call(key_id, key, waiters, final, periods) for key_id, key, waiters, final in waiting]
        try:
            if len(calls) == 1:
                results: list[Any] = [await self._sync_script(keys=calls[0][0], args=calls[0][1])]
            else:
                results = await self._pipelined(calls)
        except RedisError as exc:
            error = StoreError(f"ENGINE_REDIS: the limiter is unreachable: {type(exc).__name__}")
            for (_, key, waiters, _), (_, _, owed) in zip(waiting, calls, strict=True):
                key.owe(*owed)  # still held and owed
                for waiter, _ in waiters:
                    if not waiter.done():
                        waiter.set_exception(error)
            raise error from None
        synced = time.monotonic()
        for (_, key, waiters, _), result in zip(waiting, results, strict=True):
            self._apply(key, waiters, result, periods, synced)

    async def _pipelined(self, calls: list[tuple[tuple[str, ...], list[str], tuple[int, int, int, float]]]) -> Any:
        """Several keys' scripts in one pipeline (not a transaction: each script is atomic on its own)."""
        if not self._loaded:
            await self._redis.script_load(_SYNC)
            self._loaded = True
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in calls:
                pipe.evalsha(self._sync_script.sha, len(keys), *keys, *args)
            try:
                return await pipe.execute()
            except NoScriptError:  # the server lost its script cache (a restart): load it again next time
                self._loaded = False
                raise

    def _call(
        self,
        key_id: str,
        key: _Key,
        waiters: list[tuple[asyncio.Future[Admission], int]],
        final: bool,
        periods: Periods,
    ) -> tuple[tuple[str, ...], list[str], tuple[int, int, int, float]]:
        """One key's script: its keys, its arguments, and what it hands back (owed again if it fails)."""
        limits = key.limits
        share = 0.0 if final else self._share
        cap_r, cap_t, cap_s = _cap(limits.rpm, share), _cap(limits.tpm, share), _cap(limits.concurrent, share)
        # Hand back what is held beyond the cap; lease what the last interval used, twice over, up to it.
        back_r, back_s = max(0, key.requests - cap_r), max(0, key.slots - cap_s)
        back_t = key.tokens - min(cap_t, max(0, key.tokens))  # negative: tokens used beyond the lease, charged
        want_r = max(0, min(cap_r, 2 * key.used) - key.requests + back_r) if limits.rpm else 0
        want_t = max(0, min(cap_t, 2 * key.used_tokens) - key.tokens + back_t) if limits.tpm else 0
        want_s = max(0, min(cap_s, 2 * key.used) - key.slots + back_s) if limits.concurrent else 0
        owed = (back_r, back_t, back_s, key.cost)
        key.owe(-back_r, -back_t, -back_s, -key.cost)
        key.used = key.used_tokens = 0
        args = [
            _n(limits.rpm),
            _n(limits.tpm),
            _n(limits.concurrent),
            _n(limits.daily_usd),
            _n(limits.monthly_usd),
            self._instance,
            repr(self._lease),
            repr(periods.day_ends),
            repr(periods.month_ends),
            str(want_r),
            str(want_t),
            str(want_s),
            str(back_r),
            str(back_t),
            str(back_s),
            repr(owed[3]),
            *(str(tokens) for _, tokens in waiters),
        ]
        return _keys(key_id, periods), args, owed

    def _apply(
        self,
        key: _Key,
        waiters: list[tuple[asyncio.Future[Admission], int]],
        result: list[Any],
        periods: Periods,
        synced: float,
    ) -> None:
        """Redis's answer: the lease it granted, the shared spend, and which waiting requests it admitted."""
        limits = key.limits
        admitted, name, wait, got_r, got_t, got_s, day_usd, month_usd = result
        key.synced = synced
        key.day_usd, key.month_usd = float(day_usd), float(month_usd)
        key.day_ends, key.month_ends = periods.day_ends, periods.month_ends
        key.owe(int(got_r), int(got_t), int(got_s), 0.0)
        refusal = Admission(Refusal(name, float(getattr(limits, name)), max(0.0, float(wait)))) if name else None
        for index, (waiter, tokens) in enumerate(waiters):
            if index < int(admitted):
                key.used += 1
                key.used_tokens += tokens
                if limits.concurrent:
                    key.in_flight += 1
                admission = _HOLDING if limits.concurrent else Admission()
            else:
                assert refusal is not None, "Redis admits a prefix of the waiters and names why it stopped"
                admission = refusal
            if not waiter.done():
                waiter.set_result(admission)
            elif admission is not refusal:  # the client left while it waited: it hands back what it took
                key.owe(1 if limits.rpm else 0, tokens if limits.tpm else 0, 0, 0.0)
                if limits.concurrent:
                    key.in_flight -= 1
                    key.slots += 1

    def _tick_later(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        """Every `sync_seconds` while any key is held here, one round trip for every key that needs it
        (`_Key.due`); keys quiet for a while hand back what they hold and are forgotten."""
        while self._keys and not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self._every)
            now = time.monotonic()
            batch: list[tuple[str, _Key, bool]] = []
            for key_id, key in list(self._keys.items()):
                if key.syncing:
                    continue
                if not key.in_flight and not key.used and now - key.synced > _QUIET:
                    del self._keys[key_id]
                    if key.holds():
                        batch.append((key_id, key, True))
                elif key.due(now, self._every, self._share, self._lease):
                    batch.append((key_id, key, False))
            if batch:
                self._start_sync(batch)

    async def seed_spend(self, periods: Periods, day: Mapping[str, float], month: Mapping[str, float]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for spend, index, ends in ((day, 3, periods.day_ends), (month, 4, periods.month_ends)):
                for key_id, usd in spend.items():
                    pipe.set(_keys(key_id, periods)[index], repr(usd), nx=True, exat=math.ceil(ends) + 86_400)
            await pipe.execute()

    async def close(self) -> None:
        """Settle everything owed and hand back everything held, then disconnect."""
        self._closing.set()
        if self._ticker is not None:
            await self._ticker
        while self._syncs:
            await asyncio.gather(*self._syncs, return_exceptions=True)
        held = [(key_id, key, True) for key_id, key in self._keys.items() if key.holds()]
        if held:
            self._start_sync(held)
        await asyncio.gather(*self._syncs, return_exceptions=True)
        self._keys.clear()
        await self._redis.aclose()
