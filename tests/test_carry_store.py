"""The stored carry backend: state too big for a tool-call id is kept in the database, scoped to the gateway
key that earned it, until its TTL passes. A reference another key presents, or an expired one, reads as
nothing, and the codec then serves the turn without it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from engine import carry, carry_store
from engine.storage.sqlite import SqliteDatabase

BLOCKS = b'[{"type":"thinking","thinking":"...","signature":"sig"}]'


@pytest.mark.anyio
async def test_the_database_keeps_state_per_key_until_it_expires(database: Any) -> None:
    later = time.time() + 3600  # not purged by the put (which drops rows expired by the wall clock)
    await database.put_carried("key-a", {"ref1": BLOCKS}, expires_at=later)
    assert await database.get_carried("key-a", ["ref1", "unknown"], now=later - 1) == {"ref1": BLOCKS}
    assert await database.get_carried("key-b", ["ref1"], now=later - 1) == {}, "another key reads nothing"
    assert await database.get_carried("key-a", ["ref1"], now=later + 1) == {}, "expired"
    await database.put_carried("key-a", {"ref1": b"replaced"}, expires_at=later)
    assert await database.get_carried("key-a", ["ref1"], now=later - 1) == {"ref1": b"replaced"}


def test_a_request_scope_packs_by_reference_and_finds_it_again_next_turn(tmp_path: Path) -> None:
    async def turn_one(db: SqliteDatabase) -> str:
        await carry_store.enter(db, "key-a", {"messages": []}, ttl_seconds=60)
        packed = carry.pack("toolu_1", "anthropic", BLOCKS, backend=carry_store.LETTER)
        await carry_store.flush()
        return packed

    async def turn_two(db: SqliteDatabase, key_id: str, packed: str) -> dict[str, bytes]:
        body = {"messages": [{"role": "assistant", "tool_calls": [{"id": packed}]}, {"tool_call_id": packed}]}
        await carry_store.enter(db, key_id, body, ttl_seconds=60)
        return carry.unpack_chat(body, "anthropic").carried

    async def scenario() -> None:
        db = SqliteDatabase(tmp_path / "engine.sqlite3")
        await db.open()
        try:
            packed = await asyncio.create_task(turn_one(db))  # each request runs in its own context
            assert packed.startswith("cr1-anthropic-s32-") and packed.endswith("toolu_1") and len(packed) < 64
            assert await asyncio.create_task(turn_two(db, "key-a", packed)) == {"toolu_1": BLOCKS}
            assert await asyncio.create_task(turn_two(db, "key-b", packed)) == {}, "scoped to the key"
        finally:
            await db.close()

    asyncio.run(scenario())
