"""PostgreSQL (`ENGINE_DB=postgresql://…`): keys and the ledger shared by every instance, over asyncpg.

The schema is versioned in `schema_migrations`; an instance migrates under a transaction-scoped advisory
lock, so several starting together migrate once. Roll-ups take the same kind of lock, so two instances
never fold the same rows twice.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import asyncpg

from engine.storage.base import (
    DAILY_COLUMNS,
    DAILY_KEY,
    DAILY_SUMS,
    JOB_COLUMNS,
    DailyUsage,
    Job,
    KeyRecord,
    StoreError,
    UsageRow,
    aggregate,
    daily_values,
    day_bounds,
    decode_limits,
    digest,
    encode_limits,
    job_of,
    job_values,
    merge_units_into,
    merged_limits,
    new_key,
    row_values,
    usage_row,
)

_MIGRATE_LOCK = 0x656E67696E65  # "engine": one advisory lock id for migrations
_ROLL_UP_LOCK = _MIGRATE_LOCK + 1

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        digest TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT,
        tier TEXT,
        limits TEXT
    );
    CREATE TABLE requests (
        ts DOUBLE PRECISION NOT NULL,
        day TEXT NOT NULL,
        request_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        public_model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        operation TEXT NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        units JSONB,
        cost_usd DOUBLE PRECISION NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL,
        estimated BOOLEAN NOT NULL
    );
    CREATE INDEX requests_day ON requests (day);
    CREATE INDEX requests_key_ts ON requests (key_id, ts);
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        key_id TEXT NOT NULL,
        public_model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        operation TEXT NOT NULL,
        requests BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        units JSONB,
        cost_usd DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (day, key_id, public_model, provider, upstream_model, operation)
    );
    """,
    """
    CREATE TABLE carry_state (
        key_id TEXT NOT NULL,
        ref TEXT NOT NULL,
        state BYTEA NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (key_id, ref)
    );
    CREATE INDEX carry_state_expiry ON carry_state (expires_at);
    """,
    """
    ALTER TABLE requests ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE usage_daily ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
    """,  # Jobs had a table of their own, created when missing and never versioned, before they moved in here.
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        public_model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_id TEXT NOT NULL,
        status TEXT NOT NULL,
        seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        metered_at BIGINT
    );
    """,
)

_ROW_COLUMNS = (
    "ts, request_id, key_id, public_model, provider, upstream_model, operation, status, outcome, prompt_tokens,"
    " completion_tokens, reasoning_tokens, cached_tokens, units::text, cost_usd, latency_ms, attempts, estimated,"
    " cache_write_tokens"
)
_KEY_COLUMNS = "id, name, created_at, revoked_at, tier, limits"
_NEW_JOB_COLUMNS = JOB_COLUMNS.rsplit(",", 1)[0]  # a new job has not been metered
_GROUPED = f"""
    SELECT {", ".join(DAILY_KEY)}, COUNT(*), SUM((status >= 400)::int),
           SUM(prompt_tokens), SUM(completion_tokens), SUM(reasoning_tokens), SUM(cached_tokens),
           SUM(cache_write_tokens), (json_agg(units) FILTER (WHERE units IS NOT NULL))::text, SUM(cost_usd)
    FROM requests WHERE day >= $1 AND day < $2 GROUP BY {", ".join(DAILY_KEY)}
"""
_DAILY = f"""
    SELECT {", ".join(DAILY_KEY)}, {", ".join(DAILY_SUMS)}, units::text, cost_usd
    FROM usage_daily WHERE day >= $1 AND day < $2
"""
_UPSERT_DAILY = f"""
    INSERT INTO usage_daily ({", ".join(DAILY_COLUMNS)})
    VALUES ({", ".join(f"${i}" for i in range(1, len(DAILY_COLUMNS) + 1))})
    ON CONFLICT ({", ".join(DAILY_KEY)}) DO UPDATE SET
        {", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in DAILY_SUMS)},
        units = excluded.units, cost_usd = usage_daily.cost_usd + excluded.cost_usd
"""


def _record(row: Any) -> KeyRecord:
    return KeyRecord(row[0], row[1], row[2], row[3], row[4], decode_limits(row[5]))


class PostgresDatabase:
    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "open() the database first"
        return self._pool

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=10, command_timeout=30)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"ENGINE_DB: cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM schema_migrations") or 0
            for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                await conn.execute(step)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1)", number)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # ------------------------------------------------------------------ keys

    async def create_key(
        self, name: str, prefix: str, *, tier: str | None = None, limits: Mapping[str, float] | None = None
    ) -> str:
        key, key_id = new_key(prefix)
        try:
            await self.pool.execute(
                "INSERT INTO keys (id, name, digest, created_at, tier, limits) VALUES ($1, $2, $3, $4, $5, $6)",
                key_id,
                name,
                digest(key),
                int(time.time()),
                tier,
                encode_limits(limits or {}),
            )
        except asyncpg.UniqueViolationError:
            raise StoreError(f"a key named {name!r} already exists") from None
        return key

    async def update_key(
        self, name: str, *, tier: str | None, limits: Mapping[str, float], clear_tier: bool = False
    ) -> KeyRecord:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM keys WHERE name = $1 FOR UPDATE", name)
            if row is None:
                raise StoreError(f"no key named {name!r}")
            current = _record(row)
            new_tier = None if clear_tier else (tier if tier is not None else current.tier)
            new_limits = merged_limits(current.limits, limits)
            await conn.execute(
                "UPDATE keys SET tier = $1, limits = $2 WHERE id = $3", new_tier, encode_limits(new_limits), current.id
            )
        return KeyRecord(current.id, current.name, current.created_at, current.revoked_at, new_tier, new_limits)

    async def revoke_key(self, name: str) -> None:
        status = await self.pool.execute(
            "UPDATE keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL", int(time.time()), name
        )
        if status.endswith(" 0"):
            raise StoreError(f"no active key named {name!r}")

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self.pool.fetch(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created_at, name")
        return [_record(row) for row in rows]

    async def key_with_digest(self, key_id: str) -> tuple[KeyRecord, str] | None:
        row = await self.pool.fetchrow(f"SELECT {_KEY_COLUMNS}, digest FROM keys WHERE id = $1", key_id)
        return (_record(row), row[6]) if row is not None else None

    # ------------------------------------------------------------------ ledger

    async def append(self, rows: Sequence[UsageRow]) -> None:
        await self.pool.copy_records_to_table("requests", records=[row_values(row) for row in rows])

    async def daily(self, since: str | None = None, until: str | None = None) -> list[DailyUsage]:
        bounds = day_bounds(since, until)
        async with self.pool.acquire() as conn:
            rows = [*(await conn.fetch(_DAILY, *bounds)), *(await conn.fetch(_GROUPED, *bounds))]
        return aggregate(tuple(row) for row in rows)

    async def roll_up(self, before_day: str) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _ROLL_UP_LOCK)
            folded = aggregate(tuple(r) for r in await conn.fetch(_GROUPED, "", before_day))
            existing = aggregate(tuple(r) for r in await conn.fetch(_DAILY, "", before_day))
            merge_units_into(folded, existing)
            await conn.executemany(_UPSERT_DAILY, [daily_values(item) for item in folded])
            status = await conn.execute("DELETE FROM requests WHERE day < $1", before_day)
        return int(status.split()[-1])

    async def spend_since(self, ts: float) -> dict[str, float]:
        day = time.strftime("%Y-%m-%d", time.gmtime(ts))
        rows = await self.pool.fetch(
            """SELECT key_id, SUM(cost) FROM (
                   SELECT key_id, cost_usd AS cost FROM requests WHERE ts >= $1
                   UNION ALL SELECT key_id, cost_usd FROM usage_daily WHERE day >= $2
               ) AS spent GROUP BY key_id""",
            ts,
            day,
        )
        return {row[0]: float(row[1]) for row in rows}

    async def recent(self, key_id: str | None = None, limit: int = 100) -> list[UsageRow]:
        if key_id:
            sql = f"SELECT {_ROW_COLUMNS} FROM requests WHERE key_id = $1 ORDER BY ts DESC LIMIT $2"
            rows = await self.pool.fetch(sql, key_id, limit)
        else:
            rows = await self.pool.fetch(f"SELECT {_ROW_COLUMNS} FROM requests ORDER BY ts DESC LIMIT $1", limit)
        return [usage_row(tuple(row)) for row in rows]

    # ------------------------------------------------------------------ carried state

    async def put_carried(self, key_id: str, states: Mapping[str, bytes], expires_at: float) -> None:
        rows = [(key_id, ref, state, expires_at) for ref, state in states.items()]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM carry_state WHERE expires_at < $1", time.time())
            await conn.executemany(
                "INSERT INTO carry_state VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (key_id, ref) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at",
                rows,
            )

    async def get_carried(self, key_id: str, refs: Collection[str], now: float) -> dict[str, bytes]:
        if not refs:
            return {}
        rows = await self.pool.fetch(
            "SELECT ref, state FROM carry_state WHERE key_id = $1 AND expires_at >= $2 AND ref = ANY($3::text[])",
            key_id,
            now,
            list(refs),
        )
        return {row["ref"]: bytes(row["state"]) for row in rows}

    # ------------------------------------------------------------------ jobs

    async def create_job(self, job: Job) -> None:
        sql = f"INSERT INTO jobs ({_NEW_JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        await self.pool.execute(sql, *job_values(job))

    async def job(self, job_id: str, key_id: str) -> Job | None:
        row = await self.pool.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND key_id = $2", job_id, key_id)
        return None if row is None else job_of(tuple(row))

    async def update_job(self, job_id: str, status: str, seconds: float) -> None:
        await self.pool.execute("UPDATE jobs SET status = $1, seconds = $2 WHERE id = $3", status, seconds, job_id)

    async def claim_metering(self, job_id: str) -> bool:
        sql = "UPDATE jobs SET metered_at = $1 WHERE id = $2 AND metered_at IS NULL"
        return bool(await self.pool.execute(sql, int(time.time()), job_id) == "UPDATE 1")
