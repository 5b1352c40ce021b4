"""Storage, chosen by URL: `ENGINE_DB` names the database (keys, the usage ledger).

- `sqlite:///relative/path`, `sqlite:////absolute/path`, or a plain file path: the embedded default,
  `var/engine.sqlite3` in the checkout;
- `postgresql://user@host:port/db`: shared by every instance pointed at it.

`ENGINE_REDIS` (`redis://host:port/db`) moves the limiter's counters (rates, live spend, concurrency
slots) into Redis, shared by every instance; without it each process counts on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.spec.models import Limits as LimitsSpec
from engine.storage.base import Database, KeyRecord, KeyStore, Ledger, Limiter, StoreError, UsageRow

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_DB = REPO_ROOT / "var" / "engine.sqlite3"

__all__ = [
    "Database",
    "KeyRecord",
    "KeyStore",
    "Ledger",
    "Limiter",
    "StoreError",
    "UsageRow",
    "database_url",
    "open_database",
    "open_limiter",
]


def database_url(configured: str | os.PathLike[str] | None = None) -> str:
    """The database URL: the argument, else `ENGINE_DB`, else the embedded file. Plain paths are SQLite."""
    value = str(configured or os.environ.get("ENGINE_DB") or DEFAULT_DB)
    return value if "://" in value else f"sqlite:///{value}"


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///")).expanduser()


def open_database(url: str | os.PathLike[str] | None = None) -> Database:
    """The database for `url` (see `database_url`), not yet connected: `await db.open()` connects and migrates."""
    url = database_url(url)
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from engine.storage.sqlite import SqliteDatabase

        return SqliteDatabase(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from engine.storage.postgres import PostgresDatabase

        return PostgresDatabase(url)
    raise StoreError(f"ENGINE_DB: unsupported database URL scheme {scheme!r}; use sqlite:///PATH or postgresql://…")


# ENGINE_REDIS schemes, as the driver (redis-py) spells them: Valkey speaks Redis's protocol, but redis-py
# refuses a `valkey://` URL, so those are read as the Redis scheme they stand for.
_REDIS_SCHEMES = {"redis": "redis", "rediss": "rediss", "unix": "unix", "valkey": "redis", "valkeys": "rediss"}


def open_limiter(url: str | None = None, policy: LimitsSpec | None = None) -> Limiter:
    """The limiter for `url`, else `ENGINE_REDIS`, else the in-process one (`policy`: routes.toml's limits)."""
    url = url or os.environ.get("ENGINE_REDIS") or None
    if url is None:
        from engine.storage.memory import MemoryLimiter

        return MemoryLimiter()
    scheme, sep, rest = url.partition("://")
    driver = _REDIS_SCHEMES.get(scheme.lower()) if sep else None
    if driver is None:
        raise StoreError("ENGINE_REDIS: use a redis://host:port/db URL (or rediss://, unix://, valkey://, valkeys://)")
    url = f"{driver}://{rest}"
    from engine.storage.redis import RedisLimiter

    policy = policy or LimitsSpec()
    return RedisLimiter(url, policy.concurrency_lease_seconds, policy.sync_seconds, policy.lease_share)
