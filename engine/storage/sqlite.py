"""The embedded database: SQLite, one file, no other service (`ENGINE_DB=sqlite:///path`, the default).

sqlite3 is synchronous, so every call runs on one dedicated thread that owns the connection; the event
loop only awaits it. WAL mode lets several worker processes share the file (their writes queue on the
busy timeout, in that thread, never on the loop).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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

T = TypeVar("T")

# Each entry migrates from version i to i + 1; `PRAGMA user_version` records how many have run.
# Version 1 is the schema before versioning (keys + daily usage), so its statements tolerate existing tables.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        digest TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE IF NOT EXISTS usage (
        key_id TEXT NOT NULL,
        day TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        requests INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, day, model, provider)
    );
    """,
    """
    ALTER TABLE keys ADD COLUMN tier TEXT;
    ALTER TABLE keys ADD COLUMN limits TEXT;
    CREATE TABLE requests (
        ts REAL NOT NULL,
        day TEXT NOT NULL,
        request_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        public_model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        operation TEXT NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        units TEXT,
        cost_usd REAL NOT NULL,
        latency_ms REAL NOT NULL,
        attempts INTEGER NOT NULL,
        estimated INTEGER NOT NULL
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
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        units TEXT,
        cost_usd REAL NOT NULL,
        PRIMARY KEY (day, key_id, public_model, provider, upstream_model, operation)
    );
    INSERT INTO usage_daily
        SELECT day, key_id, model, provider, '', '', requests, 0, prompt_tokens, completion_tokens,
               reasoning_tokens, cached_tokens, NULL, cost_usd
        FROM usage;
    DROP TABLE usage;
    """,
    """
    CREATE TABLE carry_state (
        key_id TEXT NOT NULL,
        ref TEXT NOT NULL,
        state BLOB NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (key_id, ref)
    );
    CREATE INDEX carry_state_expiry ON carry_state (expires_at);
    """,
    """
    ALTER TABLE requests ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage_daily ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
    """,  # Jobs had a table of their own, created when missing and never versioned, before they moved in here.
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        public_model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_id TEXT NOT NULL,
        status TEXT NOT NULL,
        seconds REAL NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        metered_at INTEGER
    );
    """,
)

_ROW_COLUMNS = (
    "ts, request_id, key_id, public_model, provider, upstream_model, operation, status, outcome, prompt_tokens,"
    " completion_tokens, reasoning_tokens, cached_tokens, units, cost_usd, latency_ms, attempts, estimated,"
    " cache_write_tokens"
)
_KEY_COLUMNS = "id, name, created_at, revoked_at, tier, limits"
_NEW_JOB_COLUMNS = JOB_COLUMNS.rsplit(",", 1)[0]  # a new job has not been metered
_GROUPED = f"""
    SELECT {", ".join(DAILY_KEY)}, COUNT(*), SUM(status >= 400),
           SUM(prompt_tokens), SUM(completion_tokens), SUM(reasoning_tokens), SUM(cached_tokens),
           SUM(cache_write_tokens), json_group_array(json(units)) FILTER (WHERE units IS NOT NULL), SUM(cost_usd)
    FROM requests WHERE day >= ? AND day < ? GROUP BY {", ".join(DAILY_KEY)}
"""
_DAILY = f"""
    SELECT {", ".join(DAILY_KEY)}, {", ".join(DAILY_SUMS)}, units, cost_usd
    FROM usage_daily WHERE day >= ? AND day < ?
"""
_UPSERT_DAILY = f"""
    INSERT INTO usage_daily ({", ".join(DAILY_COLUMNS)}) VALUES ({", ".join("?" * len(DAILY_COLUMNS))})
    ON CONFLICT ({", ".join(DAILY_KEY)}) DO UPDATE SET
        {", ".join(f"{c} = {c} + excluded.{c}" for c in DAILY_SUMS)},
        units = excluded.units, cost_usd = cost_usd + excluded.cost_usd
"""


def _record(row: tuple[Any, ...]) -> KeyRecord:
    key_id, name, created_at, revoked_at, tier, limits = row[:6]
    return KeyRecord(key_id, name, created_at, revoked_at, tier, decode_limits(limits))


class SqliteDatabase:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "open() the database first"
        return self._db

    # ------------------------------------------------------------------ lifecycle (on the database thread)

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        db = self.db
        if db.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
            return
        db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then find it done
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[version:]:
                for statement in step.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self.db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ keys

    async def create_key(
        self, name: str, prefix: str, *, tier: str | None = None, limits: Mapping[str, float] | None = None
    ) -> str:
        key, key_id = new_key(prefix)
        try:
            await self._run(
                self.db.execute,
                "INSERT INTO keys (id, name, digest, created_at, tier, limits) VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, name, digest(key), int(time.time()), tier, encode_limits(limits or {})),
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"a key named {name!r} already exists") from None
        return key

    async def update_key(
        self, name: str, *, tier: str | None, limits: Mapping[str, float], clear_tier: bool = False
    ) -> KeyRecord:
        return await self._run(self._update_key, name, tier, limits, clear_tier)

    def _update_key(self, name: str, tier: str | None, limits: Mapping[str, float], clear_tier: bool) -> KeyRecord:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise StoreError(f"no key named {name!r}")
            current = _record(row)
            new_tier = None if clear_tier else (tier if tier is not None else current.tier)
            new_limits = merged_limits(current.limits, limits)
            db.execute(
                "UPDATE keys SET tier = ?, limits = ? WHERE id = ?", (new_tier, encode_limits(new_limits), current.id)
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return KeyRecord(current.id, current.name, current.created_at, current.revoked_at, new_tier, new_limits)

    async def revoke_key(self, name: str) -> None:
        cursor = await self._run(
            self.db.execute,
            "UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (int(time.time()), name),
        )
        if cursor.rowcount == 0:
            raise StoreError(f"no active key named {name!r}")

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._run(self._fetchall, f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created_at, name", ())
        return [_record(row) for row in rows]

    async def key_with_digest(self, key_id: str) -> tuple[KeyRecord, str] | None:
        rows = await self._run(self._fetchall, f"SELECT {_KEY_COLUMNS}, digest FROM keys WHERE id = ?", (key_id,))
        return (_record(rows[0]), rows[0][6]) if rows else None

    def _fetchall(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ ledger

    async def append(self, rows: Sequence[UsageRow]) -> None:
        await self._run(self._append, [row_values(row) for row in rows])

    def _append(self, values: list[tuple[Any, ...]]) -> None:
        with self._transaction():
            self.db.executemany(f"INSERT INTO requests VALUES ({', '.join('?' * 20)})", values)

    def _transaction(self) -> sqlite3.Connection:
        self.db.execute("BEGIN")
        return self.db  # its context manager commits, or rolls back on an exception

    async def daily(self, since: str | None = None, until: str | None = None) -> list[DailyUsage]:
        return await self._run(self._daily, day_bounds(since, until))

    def _daily(self, bounds: tuple[str, str]) -> list[DailyUsage]:
        rows = self.db.execute(_DAILY, bounds).fetchall() + self.db.execute(_GROUPED, bounds).fetchall()
        return aggregate(rows)

    async def roll_up(self, before_day: str) -> int:
        return await self._run(self._roll_up, before_day)

    def _roll_up(self, before_day: str) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            folded = aggregate(db.execute(_GROUPED, ("", before_day)).fetchall())
            merge_units_into(folded, aggregate(db.execute(_DAILY, ("", before_day)).fetchall()))
            db.executemany(_UPSERT_DAILY, [daily_values(item) for item in folded])
            count = db.execute("DELETE FROM requests WHERE day < ?", (before_day,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return count

    async def recent(self, key_id: str | None = None, limit: int = 100) -> list[UsageRow]:
        where, params = ("WHERE key_id = ?", (key_id, limit)) if key_id else ("", (limit,))
        sql = f"SELECT {_ROW_COLUMNS} FROM requests {where} ORDER BY ts DESC, rowid DESC LIMIT ?"
        return [usage_row(values) for values in await self._run(self._fetchall, sql, params)]

    async def spend_since(self, ts: float) -> dict[str, float]:
        day = time.strftime("%Y-%m-%d", time.gmtime(ts))
        return dict(await self._run(self._spend_since, ts, day))

    def _spend_since(self, ts: float, day: str) -> list[tuple[str, float]]:
        sql = """SELECT key_id, SUM(cost) FROM (
                     SELECT key_id, cost_usd AS cost FROM requests WHERE ts >= ?
                     UNION ALL SELECT key_id, cost_usd FROM usage_daily WHERE day >= ?
                 ) GROUP BY key_id"""
        return self.db.execute(sql, (ts, day)).fetchall()

    # ------------------------------------------------------------------ carried state

    async def put_carried(self, key_id: str, states: Mapping[str, bytes], expires_at: float) -> None:
        rows = [(key_id, ref, state, expires_at) for ref, state in states.items()]
        await self._run(self._put_carried, rows, time.time())

    def _put_carried(self, rows: list[tuple[str, str, bytes, float]], now: float) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM carry_state WHERE expires_at < ?", (now,))
            self.db.executemany("INSERT OR REPLACE INTO carry_state VALUES (?, ?, ?, ?)", rows)

    async def get_carried(self, key_id: str, refs: Collection[str], now: float) -> dict[str, bytes]:
        if not refs:
            return {}
        marks = ",".join("?" * len(refs))
        sql = f"SELECT ref, state FROM carry_state WHERE key_id = ? AND expires_at >= ? AND ref IN ({marks})"
        found = await self._run(self._fetchall, sql, (key_id, now, *refs))
        return {ref: bytes(state) for ref, state in found}

    # ------------------------------------------------------------------ jobs

    async def create_job(self, job: Job) -> None:
        sql = f"INSERT INTO jobs ({_NEW_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        await self._run(self.db.execute, sql, job_values(job))

    async def job(self, job_id: str, key_id: str) -> Job | None:
        sql = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ? AND key_id = ?"
        rows = await self._run(self._fetchall, sql, (job_id, key_id))
        return job_of(rows[0]) if rows else None

    async def update_job(self, job_id: str, status: str, seconds: float) -> None:
        sql = "UPDATE jobs SET status = ?, seconds = ? WHERE id = ?"
        await self._run(self.db.execute, sql, (status, seconds, job_id))

    async def claim_metering(self, job_id: str) -> bool:
        sql = "UPDATE jobs SET metered_at = ? WHERE id = ? AND metered_at IS NULL"
        cursor = await self._run(self.db.execute, sql, (int(time.time()), job_id))
        return bool(cursor.rowcount == 1)
