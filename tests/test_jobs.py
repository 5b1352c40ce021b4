"""The job store's contract, on every database: a job is found only with the key that created it, its
state is kept, and metering is claimed exactly once (by one of many concurrent callers)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine.jobs import Job, new_job_id
from engine.storage import open_database

pytestmark = pytest.mark.anyio


async def test_jobs_belong_to_their_key_and_are_metered_once(database: Any) -> None:
    job = Job(new_job_id(), "key-a", "openai/sora-2", "openai", "video_up1", "queued", 4.0, 1760000000)
    await database.create_job(job)
    found = await database.job(job.id, "key-a")
    assert found == job and not found.metered
    assert await database.job(job.id, "key-b") is None, "another key's job looks like no job"
    await database.update_job(job.id, "completed", 8.0)
    claims = await asyncio.gather(*(database.claim_metering(job.id) for _ in range(8)))
    assert sorted(claims) == [False] * 7 + [True]
    after = await database.job(job.id, "key-a")
    assert after is not None and (after.status, after.seconds, after.metered) == ("completed", 8.0, True)


async def test_jobs_from_the_table_made_before_versioning_are_kept(tmp_path: Path) -> None:
    """Jobs once had a table of their own, created when missing; the migration adopts it as it is."""
    path = tmp_path / "engine.sqlite3"
    first = open_database(f"sqlite:///{path}")
    await first.open()
    await first.close()
    with sqlite3.connect(path) as db:  # as if the old job store had written a row before the upgrade
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute("DROP TABLE jobs")
        db.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, public_model TEXT NOT NULL,"
            " provider TEXT NOT NULL, upstream_id TEXT NOT NULL, status TEXT NOT NULL,"
            " seconds REAL NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, metered_at INTEGER)"
        )
        db.execute("INSERT INTO jobs VALUES ('video_old', 'key-a', 'm', 'p', 'up', 'queued', 0, 1, NULL)")
        db.execute(f"PRAGMA user_version = {version - 1}")
    again = open_database(f"sqlite:///{path}")
    await again.open()
    try:
        kept = await again.job("video_old", "key-a")
        assert kept is not None and kept.upstream_id == "up"
    finally:
        await again.close()
