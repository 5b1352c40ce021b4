"""What the gateway keeps, as small async interfaces: gateway keys, the usage ledger, carried state.

One implementation per database sits next to this module (`sqlite.py`, `postgres.py`); `open_database`
in `__init__` picks one from `ENGINE_DB`. The request path never waits on them: keys are cached by
`auth.Authenticator`, and ledger rows are batched by `ledger.Recorder`.

A key is `<prefix><id>_<secret>`. The id is a lookup handle stored in clear; only SHA-256 of the whole
key is stored, and the check compares digests in constant time. SHA-256 (not a slow KDF) is right here
because keys are 256-bit random strings, not passwords: there is nothing to brute-force.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(prefix: str) -> tuple[str, str]:
    """A fresh key and its id."""
    key_id = secrets.token_hex(6)
    return f"{prefix}{key_id}_{secrets.token_urlsafe(32)}", key_id


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    created_at: int
    revoked_at: int | None
    tier: str | None = None
    limits: Mapping[str, float] = field(default_factory=dict)  # this key's own values, over its tier's


class StoreError(Exception):
    """A key operation that cannot be done (duplicate name, unknown name)."""


@dataclass(slots=True)
class UsageRow:
    """One proxied request, as the ledger keeps it. Tokens are OpenAI's (reasoning inside completion);
    `units` holds what an operation counts instead of tokens (images, seconds, characters)."""

    ts: float  # wall clock, seconds since the epoch, when the request arrived
    request_id: str
    key_id: str
    public_model: str
    provider: str
    upstream_model: str
    operation: str
    status: int  # the HTTP status the client got
    outcome: str  # ok | error | client_closed | stream_broken | timeout
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    units: Mapping[str, float] = field(default_factory=dict)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 1
    estimated: bool = False  # a cut-short stream: counts are what was relayed, not the provider's bill
    cache_write_tokens: int = 0  # prompt tokens written to the prompt cache (inside prompt_tokens, priced apart)

    @property
    def day(self) -> str:
        return day_of(self.ts)


# The grouping of a daily aggregate, then its sums.
DAILY_KEY = ("day", "key_id", "public_model", "provider", "upstream_model", "operation")
DAILY_SUMS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cache_write_tokens",
)
# A daily aggregate's columns, named: migrations append columns, so the table's own order is not this one.
DAILY_COLUMNS = (*DAILY_KEY, *DAILY_SUMS, "units", "cost_usd")


@dataclass
class DailyUsage:
    """Usage of one key, model, provider and operation on one day (UTC)."""

    day: str
    key_id: str
    public_model: str
    provider: str
    upstream_model: str
    operation: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    units: dict[str, float] = field(default_factory=dict)
    cost_usd: float = 0.0

    def add(self, other: DailyUsage) -> None:
        for name in DAILY_SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        add_units(self.units, other.units)
        self.cost_usd += other.cost_usd


def add_units(into: dict[str, float], more: Mapping[str, float]) -> None:
    for unit, amount in more.items():
        into[unit] = into.get(unit, 0) + amount


def encode_units(units: Mapping[str, float]) -> str | None:
    return msgspec.json.encode(dict(units)).decode() if units else None


def summed_units(encoded: Iterable[Any]) -> dict[str, float]:
    """Units columns of several rows (JSON text, or already decoded by the driver), summed."""
    total: dict[str, float] = {}
    for item in encoded:
        doc = msgspec.json.decode(item) if isinstance(item, str | bytes) else item
        if isinstance(doc, dict):
            add_units(total, doc)
        elif isinstance(doc, list):  # json_group_array / json_agg of several rows
            add_units(total, summed_units(doc))
    return total


def decode_limits(text: str | None) -> dict[str, float]:
    return dict(msgspec.json.decode(text)) if text else {}


def encode_limits(limits: Mapping[str, float]) -> str | None:
    return msgspec.json.encode(dict(sorted(limits.items()))).decode() if limits else None


class KeyStore(Protocol):
    async def create_key(
        self, name: str, prefix: str, *, tier: str | None = None, limits: Mapping[str, float] | None = None
    ) -> str:
        """Store a new key; returns the key itself, which is never stored and cannot be shown again."""
        ...

    async def update_key(
        self, name: str, *, tier: str | None, limits: Mapping[str, float], clear_tier: bool = False
    ) -> KeyRecord:
        """Change a key's tier and limits in place (`limits` merged over its own; a value < 0 removes one)."""
        ...

    async def revoke_key(self, name: str) -> None: ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def key_with_digest(self, key_id: str) -> tuple[KeyRecord, str] | None: ...


class Ledger(Protocol):
    async def append(self, rows: Sequence[UsageRow]) -> None:
        """Write rows in one transaction (a batch from `ledger.Recorder`)."""
        ...

    async def daily(self, since: str | None = None, until: str | None = None) -> list[DailyUsage]:
        """Daily aggregates (raw rows grouped, plus rolled-up days), for days in [since, until]."""
        ...

    async def roll_up(self, before_day: str) -> int:
        """Fold raw rows of days before `before_day` into daily aggregates; returns the rows folded."""
        ...

    async def spend_since(self, ts: float) -> dict[str, float]:
        """USD spent per key since `ts` (whole days count for rolled-up days)."""
        ...

    async def recent(self, key_id: str | None = None, limit: int = 100) -> list[UsageRow]:
        """The latest raw rows, newest first (of one key, if given)."""
        ...


@dataclass(frozen=True)
class KeyLimits:
    """A key's limits after defaults, tier and its own values are layered; None is no limit."""

    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.concurrent, self.daily_usd, self.monthly_usd))


@dataclass(frozen=True)
class Refusal:
    limit: str  # a KeyLimits field name
    value: float  # the limit
    retry_after: float  # seconds until a request would be admitted (for a budget: until the period rolls over)


@dataclass(frozen=True, slots=True)
class Admission:
    refusal: Refusal | None = None
    slot: str | None = None  # the concurrency slot held, handed back to `settle`


ADMITTED = Admission()


@dataclass(frozen=True)
class Periods:
    """The UTC day and month a budget counts in, and when each ends."""

    day: str
    month: str
    day_ends: float
    month_ends: float

    starts: float = 0.0  # when the day began

    @classmethod
    def at(cls, now: float) -> Periods:
        """The periods `now` falls in; computed once a day (every admission asks)."""
        current = _periods[0]
        if current.starts <= now < current.day_ends:
            return current
        today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
        tomorrow = today + datetime.timedelta(days=1)
        next_month = (today.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
        found = cls(
            today.isoformat(), today.isoformat()[:7], _midnight(tomorrow), _midnight(next_month), _midnight(today)
        )
        _periods[0] = found
        return found


_periods = [Periods("", "", 0.0, 0.0, 0.0)]


def day_of(ts: float) -> str:
    """The UTC day of a timestamp as YYYY-MM-DD (the ledger asks once per row)."""
    periods = Periods.at(ts) if _periods[0].starts <= ts < _periods[0].day_ends else None
    return periods.day if periods is not None else time.strftime("%Y-%m-%d", time.gmtime(ts))


def _midnight(day: datetime.date) -> float:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()


class Limiter(Protocol):
    """Rate counters, live spend and concurrency slots. Admission checks every limit and, only if all
    pass, takes a request (and `tokens`, an estimate) from the buckets and a slot, atomically."""

    async def admit(self, key_id: str, limits: KeyLimits, tokens: int) -> Admission: ...

    def settle(self, key_id: str, limits: KeyLimits, admission: Admission, tokens: int, cost_usd: float) -> None:
        """After the request: the slot back, tokens beyond the estimate charged, the spend added. Never
        waits: a shared limiter notes what is owed and tells its server at its next sync."""
        ...

    async def seed_spend(self, periods: Periods, day: Mapping[str, float], month: Mapping[str, float]) -> None:
        """Spend already in the ledger at start-up, where the limiter has none for the period yet."""
        ...

    async def close(self) -> None: ...


class CarryStore(Protocol):
    """Provider state carried across turns by reference (`engine.carry_store`): Anthropic's signed thinking
    blocks, too big for a tool-call id. Scoped to the gateway key that earned them, kept until `expires_at`."""

    async def put_carried(self, key_id: str, states: Mapping[str, bytes], expires_at: float) -> None:
        """Keep each reference → state for this key (replacing one already kept); drop expired ones."""
        ...

    async def get_carried(self, key_id: str, refs: Collection[str], now: float) -> dict[str, bytes]:
        """The states of those references this key has kept and that have not expired at `now`."""
        ...


@dataclass(frozen=True)
class Job:
    """An asynchronous job (video) under the gateway's own id (`engine.jobs`)."""

    id: str  # the gateway's id, the only one clients see
    key_id: str  # the gateway key that created it: the only key that can see it
    public_model: str
    provider: str
    upstream_id: str
    status: str
    seconds: float  # of video, as the upstream confirmed it: what is metered when the job completes
    created_at: int
    metered: bool = False


class JobStore(Protocol):
    """Jobs shared by every instance on the database, so a job created on one is polled on another."""

    async def create_job(self, job: Job) -> None: ...

    async def job(self, job_id: str, key_id: str) -> Job | None:
        """The job, if it exists and belongs to `key_id`; None otherwise (the two look alike)."""
        ...

    async def update_job(self, job_id: str, status: str, seconds: float) -> None: ...

    async def claim_metering(self, job_id: str) -> bool:
        """True for exactly one caller per job: the one that meters it."""
        ...


JOB_COLUMNS = "id, key_id, public_model, provider, upstream_id, status, seconds, created_at, metered_at"


def job_of(row: Sequence[Any]) -> Job:
    """A job from its JOB_COLUMNS."""
    job_id, key_id, model, provider, upstream_id, status, seconds, created_at, metered_at = tuple(row)
    return Job(job_id, key_id, model, provider, upstream_id, status, float(seconds), created_at, metered_at is not None)


def job_values(job: Job) -> tuple[Any, ...]:
    """The values of a new job's row, JOB_COLUMNS but the last."""
    return (
        job.id,
        job.key_id,
        job.public_model,
        job.provider,
        job.upstream_id,
        job.status,
        job.seconds,
        job.created_at,
    )


class Database(KeyStore, Ledger, CarryStore, JobStore, Protocol):
    url: str

    async def open(self) -> None:
        """Connect and migrate the schema to the current version."""
        ...

    async def close(self) -> None: ...


async def verify(store: KeyStore, key: str, prefix: str) -> KeyRecord | None:
    """The active key record for `key`, or None. Unknown, malformed and revoked keys look alike."""
    if not key.startswith(prefix):
        return None
    key_id, sep, _ = key[len(prefix) :].partition("_")
    if not sep:
        return None
    found = await store.key_with_digest(key_id)
    presented = digest(key)
    if found is None:
        hmac.compare_digest(presented, presented)  # same work whether or not the id exists
        return None
    record, stored = found
    if not hmac.compare_digest(presented, stored) or record.revoked_at is not None:
        return None
    return record


def usage_row(values: Sequence[Any]) -> UsageRow:
    """A ledger row from its columns, in the order `UsageRow` declares them."""
    (ts, request_id, key_id, public_model, provider, upstream_model, operation, status, outcome) = values[:9]
    prompt, completion, reasoning, cached, units, cost, latency, attempts, estimated, written = values[9:19]
    return UsageRow(
        ts, request_id, key_id, public_model, provider, upstream_model, operation, status, outcome,
        prompt, completion, reasoning, cached, summed_units([units] if units is not None else []),
        cost, latency, attempts, bool(estimated), written,
    )  # fmt: skip


def daily_values(item: DailyUsage) -> tuple[Any, ...]:
    return (
        *(getattr(item, c) for c in DAILY_KEY),
        *(getattr(item, c) for c in DAILY_SUMS),
        encode_units(item.units),
        item.cost_usd,
    )


def row_values(row: UsageRow) -> tuple[Any, ...]:
    return (
        row.ts,
        row.day,
        row.request_id,
        row.key_id,
        row.public_model,
        row.provider,
        row.upstream_model,
        row.operation,
        row.status,
        row.outcome,
        row.prompt_tokens,
        row.completion_tokens,
        row.reasoning_tokens,
        row.cached_tokens,
        encode_units(row.units),
        row.cost_usd,
        row.latency_ms,
        row.attempts,
        row.estimated,
        row.cache_write_tokens,
    )


def merge_units_into(folded: list[DailyUsage], existing: list[DailyUsage]) -> None:
    """Before an upsert of `folded` over `existing` daily rows: units are JSON, so their sum is written
    whole (the numeric columns add up in SQL)."""
    by_group = {tuple(getattr(item, c) for c in DAILY_KEY): item for item in existing}
    for item in folded:
        old = by_group.get(tuple(getattr(item, c) for c in DAILY_KEY))
        if old is not None:
            add_units(item.units, old.units)


def day_bounds(since: str | None, until: str | None) -> tuple[str, str]:
    """Inclusive days [since, until] as the half-open range the queries take."""
    end = (datetime.date.fromisoformat(until) + datetime.timedelta(days=1)).isoformat() if until else "9999-12-31"
    return since or "", end


def merged_limits(current: Mapping[str, float], changes: Mapping[str, float]) -> dict[str, float]:
    merged = dict(current)
    for name, value in changes.items():
        if value < 0:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def aggregate(rows: Iterable[tuple[Any, ...]]) -> list[DailyUsage]:
    """Rows of (DAILY_KEY..., DAILY_SUMS..., units, cost) → DailyUsage, summing rows with one key."""
    out: dict[tuple[Any, ...], DailyUsage] = {}
    width = len(DAILY_KEY)
    for row in rows:
        group = tuple(row[:width])
        sums = row[width : width + len(DAILY_SUMS)]
        item = DailyUsage(*group, *(int(v or 0) for v in sums))
        item.units = summed_units([row[-2]] if row[-2] is not None else [])
        item.cost_usd = float(row[-1] or 0)
        if group in out:
            out[group].add(item)
        else:
            out[group] = item
    return list(out.values())
