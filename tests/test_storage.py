"""The storage interfaces, on every backend the suite can start: keys, the ledger, its roll-up and
the schema migration. (`database` is parametrized in conftest: SQLite always, PostgreSQL when it runs.)"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from engine.ledger import cost_of
from engine.spec.models import Price
from engine.storage import StoreError, UsageRow, open_database
from engine.storage.base import verify
from engine.storage.sqlite import MIGRATIONS
from engine.usage_report import grouped
from engine.wires.base import Usage

pytestmark = pytest.mark.anyio
DAY = 86_400.0


def row(key_id: str, ts: float, **fields: Any) -> UsageRow:
    base: dict[str, Any] = {
        "request_id": f"req_{ts}_{key_id}",
        "public_model": "openai/gpt-4.1",
        "provider": "openai",
        "upstream_model": "gpt-4.1",
        "operation": "chat.completions",
        "status": 200,
        "outcome": "ok",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_usd": 0.25,
    }
    return UsageRow(ts=ts, key_id=key_id, **(base | fields))


async def test_keys_verify_until_revoked_and_update_in_place(database: Any) -> None:
    key = await database.create_key("alice", "compose-", tier="free", limits={"rpm": 10})
    record = await verify(database, key, "compose-")
    assert record is not None and record.name == "alice" and record.tier == "free" and record.limits == {"rpm": 10}
    assert await verify(database, key + "x", "compose-") is None
    assert await verify(database, "compose-nothing_here", "compose-") is None
    with pytest.raises(StoreError, match="already exists"):
        await database.create_key("alice", "compose-")

    updated = await database.update_key("alice", tier="pro", limits={"tpm": 1000, "rpm": -1})
    assert updated.tier == "pro" and updated.limits == {"tpm": 1000}
    assert (await verify(database, key, "compose-")) == updated, "the same key, changed limits"
    cleared = await database.update_key("alice", tier=None, limits={}, clear_tier=True)
    assert cleared.tier is None and cleared.limits == {"tpm": 1000}

    await database.revoke_key("alice")
    assert await verify(database, key, "compose-") is None
    with pytest.raises(StoreError):
        await database.revoke_key("alice")
    with pytest.raises(StoreError):
        await database.update_key("nobody", tier=None, limits={})


async def test_ledger_rows_group_by_day_and_roll_up_without_changing_totals(database: Any) -> None:
    now = time.time()
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    old = now - 40 * DAY
    rows = [
        row("k1", old, cost_usd=0.5, cached_tokens=1, cache_write_tokens=6),
        row("k1", old + 1, status=502, outcome="error", prompt_tokens=0, completion_tokens=0, cost_usd=0.0),
        row("k1", old + 2, operation="images.generations", units={"images": 2}, cost_usd=0.08),
        row("k1", old + 3, operation="images.generations", units={"images": 1}, cost_usd=0.04),
        row("k2", now - 2, reasoning_tokens=3, cached_tokens=4, cache_write_tokens=2),
        row("k1", now - 1),
    ]
    await database.append(rows)
    before = grouped(await database.daily(), ["key", "operation"], {})
    assert [(e["key"], e["operation"], e["requests"], e["errors"]) for e in before] == [
        ("k1", "chat.completions", 3, 1),
        ("k1", "images.generations", 2, 0),
        ("k2", "chat.completions", 1, 0),
    ]
    assert before[1]["units"] == {"images": 3} and before[1]["cost_usd"] == pytest.approx(0.12)
    assert [(e["cached_tokens"], e["cache_write_tokens"]) for e in before] == [(1, 6), (0, 0), (4, 2)]

    assert await database.roll_up(today) == 4, "the four rows of 40 days ago, not today's"
    assert await database.roll_up(today) == 0
    assert grouped(await database.daily(), ["key", "operation"], {}) == before, "a roll-up keeps every total"
    assert [r.key_id for r in await database.recent()] == ["k1", "k2"], "raw rows left: today's, newest first"
    recent = (await database.recent("k2"))[0]
    assert (recent.reasoning_tokens, recent.cached_tokens, recent.cache_write_tokens) == (3, 4, 2)

    old_day = time.strftime("%Y-%m-%d", time.gmtime(old))
    assert {e["day"] for e in grouped(await database.daily(since=today), ["day"], {})} == {today}
    assert {e["day"] for e in grouped(await database.daily(until=old_day), ["day"], {})} == {old_day}
    spend = await database.spend_since(now - DAY)
    assert spend == pytest.approx({"k1": 0.25, "k2": 0.25})


async def test_a_large_batch_is_written_whole_and_every_row_reads_back(database: Any) -> None:
    """A flush of more rows than any test writes elsewhere: every row and its units read back."""
    now = time.time()
    rows = [
        row(f"k{n % 3}", now - n, prompt_tokens=n, units={"images": n} if n % 7 == 0 and n else {}) for n in range(1234)
    ]
    await database.append(rows)
    recent = await database.recent(limit=2000)
    assert len(recent) == 1234
    assert sorted(r.prompt_tokens for r in recent) == list(range(1234))
    assert {r.prompt_tokens: dict(r.units) for r in recent if r.units} == {n: {"images": n} for n in range(7, 1234, 7)}


async def test_a_database_from_before_versioning_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:  # the schema as it was before the ledger
        old.executescript(
            """CREATE TABLE keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, digest TEXT NOT NULL,
                                  created_at INTEGER NOT NULL, revoked_at INTEGER);
               CREATE TABLE usage (key_id TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL,
                   provider TEXT NOT NULL, requests INTEGER NOT NULL DEFAULT 0,
                   prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
                   cached_tokens INTEGER NOT NULL DEFAULT 0, reasoning_tokens INTEGER NOT NULL DEFAULT 0,
                   cost_usd REAL NOT NULL DEFAULT 0, PRIMARY KEY (key_id, day, model, provider));
               INSERT INTO usage VALUES ('k0', '2026-01-02', 'openai/gpt-4.1', 'openai', 3, 30, 20, 0, 0, 0.5);"""
        )
    for _ in range(2):  # the second start finds nothing to do
        db = open_database(str(path))  # a plain path, as ENGINE_DB was before it took URLs
        await db.open()
        try:
            [day] = await db.daily(until="2026-01-02")
            assert (day.day, day.key_id, day.requests, day.prompt_tokens, day.cost_usd) == (
                "2026-01-02",
                "k0",
                3,
                30,
                0.5,
            )
            assert await db.create_key(f"new{_}", "compose-")
            await db.append([row("k0", time.time() + _, cache_write_tokens=3 + _)])
            assert (await db.recent("k0"))[0].cache_write_tokens == 3 + _, "the migrated ledger takes new rows"
        finally:
            await db.close()
    with sqlite3.connect(path) as migrated:
        assert migrated.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_cost_comes_from_catalog_prices_per_million_tokens() -> None:
    price = Price(input=2.0, output=8.0, cached_input=0.5)
    usage = Usage(prompt_tokens=1000, completion_tokens=100, cached_tokens=400)
    assert cost_of(usage, price) == pytest.approx((600 * 2.0 + 400 * 0.5 + 100 * 8.0) / 1e6)
    assert cost_of(usage, Price(input=2.0, output=8.0)) == pytest.approx((1000 * 2.0 + 100 * 8.0) / 1e6)
    assert cost_of(usage, None) == 0.0
    written = Usage(prompt_tokens=1000, completion_tokens=100, cached_tokens=400, cache_write_tokens=100)
    with_writes = Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75)
    assert cost_of(written, with_writes) == pytest.approx((500 * 3.0 + 400 * 0.3 + 100 * 3.75 + 100 * 15.0) / 1e6)


def test_engine_db_accepts_urls_and_plain_paths(tmp_path: Path) -> None:
    from engine.storage import database_url

    assert database_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path}/a.db"
    assert open_database(f"sqlite:///{tmp_path}/a.db").path == tmp_path / "a.db"  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="unsupported"):
        open_database("mysql://db/x")


async def test_engine_redis_takes_valkey_urls_as_the_redis_scheme_they_stand_for() -> None:
    """Valkey speaks Redis's protocol; redis-py knows only its own URL schemes. (No server is reached here.)"""
    from engine.storage import open_limiter
    from engine.storage.redis import RedisLimiter

    for url, driver in (("valkey://127.0.0.1:6390/2", "redis://"), ("valkeys://cache:6390/0", "rediss://")):
        limiter = open_limiter(url)
        assert isinstance(limiter, RedisLimiter) and limiter.url.startswith(driver)
        await limiter.close()
    with pytest.raises(StoreError, match="ENGINE_REDIS"):
        open_limiter("memcached://127.0.0.1:11211")
