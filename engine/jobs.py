"""Asynchronous jobs (video generation): the gateway's own job ids, mapped to the provider's.

A client never sees an upstream job id: the gateway issues `video_<random>` and stores, with it, the key
that created the job, the provider and public model that serve it, and the upstream id. Lookups are by
(job id, key), so another key's job is indistinguishable from one that does not exist (a 404, not a 403).
A finished job is metered once: `claim_metering` succeeds for exactly one caller.

`JobStore` is the interface; `SQLiteJobStore` keeps jobs in the embedded database, `PostgresJobStore`
in the PostgreSQL database every instance shares (so a job created on one is polled on another);
`open_job_store` picks one from the database URL (`ENGINE_DB`).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg

from engine.storage import StoreError, database_url, sqlite_path


@dataclass(frozen=True)
class Job:
    id: str  # the gateway's id, the only one clients see
    key_id: str  # the gateway key that created it: the only key that can see it
    public_model: str
    provider: str
    upstream_id: str
    status: str
    seconds: float  # of video, as the upstream confirmed it: what is metered when the job completes
    created_at: int
    metered: bool = False


def new_job_id(prefix: str = "video_") -> str:
    return f"{prefix}{secrets.token_hex(16)}"


class JobStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create(self, job: Job) -> None: ...

    async def get(self, job_id: str, key_id: str) -> Job | None:
        """The job, if it exists and belongs to `key_id`; None otherwise (the two look alike)."""
        ...

    async def update(self, job_id: str, status: str, seconds: float) -> None: ...

    async def claim_metering(self, job_id: str) -> bool:
        """True for exactly one caller per job: the one that meters it."""
        ...


def open_job_store(url: str | None = None) -> JobStore:
    """The job store of the database `ENGINE_DB` names (see `engine.storage.database_url`); not yet open."""
    url = database_url(url)
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        return SQLiteJobStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        return PostgresJobStore(url)
    raise StoreError(f"ENGINE_DB: no job store for database URL scheme {scheme!r} in this build")


SCHEMA = """
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
)
"""


class SQLiteJobStore:
    """Jobs in the embedded SQLite database, through aiosqlite (the event loop never waits on disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._db.execute(SCHEMA)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _conn(self) -> aiosqlite.Connection:
        await self.open()
        assert self._db is not None
        return self._db

    async def create(self, job: Job) -> None:
        db = await self._conn()
        await db.execute(
            "INSERT INTO jobs (id, key_id, public_model, provider, upstream_id, status, seconds, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                job.key_id,
                job.public_model,
                job.provider,
                job.upstream_id,
                job.status,
                job.seconds,
                job.created_at,
            ),
        )

    async def get(self, job_id: str, key_id: str) -> Job | None:
        db = await self._conn()
        async with db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND key_id = ?",
            (job_id, key_id),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return _job(row)

    async def update(self, job_id: str, status: str, seconds: float) -> None:
        db = await self._conn()
        await db.execute("UPDATE jobs SET status = ?, seconds = ? WHERE id = ?", (status, seconds, job_id))

    async def claim_metering(self, job_id: str) -> bool:
        db = await self._conn()
        cursor = await db.execute(
            "UPDATE jobs SET metered_at = ? WHERE id = ? AND metered_at IS NULL", (int(time.time()), job_id)
        )
        return cursor.rowcount == 1


_COLUMNS = "id, key_id, public_model, provider, upstream_id, status, seconds, created_at, metered_at"


def _job(row: Any) -> Job:
    job_id, key, model, provider, upstream_id, status, seconds, created_at, metered_at = tuple(row)
    return Job(job_id, key, model, provider, upstream_id, status, seconds, created_at, metered_at is not None)


_SCHEMA_LOCK = 0x6A6F6273  # "jobs"
_PG_SCHEMA = SCHEMA.replace("seconds REAL", "seconds DOUBLE PRECISION").replace("INTEGER", "BIGINT")


class PostgresJobStore:
    """Jobs in PostgreSQL, over an asyncpg pool of their own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4)
            async with self._pool.acquire() as conn:
                await conn.execute(
                    SCHEMA.replace("seconds REAL", "seconds DOUBLE PRECISION").replace("INTEGER", "BIGINT")
                )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _run(self) -> asyncpg.Pool:
        await self.open()
        assert self._pool is not None
        return self._pool

    async def create(self, job: Job) -> None:
        pool = await self._run()
        await pool.execute(
            "INSERT INTO jobs (id, key_id, public_model, provider, upstream_id, status, seconds, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            job.id,
            job.key_id,
            job.public_model,
            job.provider,
            job.upstream_id,
            job.status,
            job.seconds,
            job.created_at,
        )

    async def get(self, job_id: str, key_id: str) -> Job | None:
        pool = await self._run()
        row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 AND key_id = $2", job_id, key_id)
        return None if row is None else _job(row)

    async def update(self, job_id: str, status: str, seconds: float) -> None:
        pool = await self._run()
        await pool.execute("UPDATE jobs SET status = $1, seconds = $2 WHERE id = $3", status, seconds, job_id)

    async def claim_metering(self, job_id: str) -> bool:
        pool = await self._run()
        done = await pool.execute(
            "UPDATE jobs SET metered_at = $1 WHERE id = $2 AND metered_at IS NULL", int(time.time()), job_id
        )
        return bool(done == "UPDATE 1")
