"""The job store's contract, on every backend: a job is found only with the key that created it, its
state is kept, and metering is claimed exactly once (by one of many concurrent callers)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine.jobs import Job, JobStore, new_job_id, open_job_store
from tests.conftest import fresh_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    return asyncio.run(fresh_postgres(request.getfixturevalue("pg_server")))


async def exercise(store: JobStore) -> dict[str, Any]:
    await store.open()
    try:
        job = Job(new_job_id(), "key-a", "openai/sora-2", "openai", "video_up1", "queued", 4.0, 1760000000)
        await store.create(job)
        found = await store.get(job.id, "key-a")
        hidden = await store.get(job.id, "key-b")
        await store.update(job.id, "completed", 8.0)
        claims = await asyncio.gather(*(store.claim_metering(job.id) for _ in range(8)))
        return {"found": found, "hidden": hidden, "after": await store.get(job.id, "key-a"), "claims": claims}
    finally:
        await store.close()


def test_jobs_belong_to_their_key_and_are_metered_once(url: str) -> None:
    seen = asyncio.run(exercise(open_job_store(url)))
    assert seen["found"] is not None and seen["found"].upstream_id == "video_up1" and not seen["found"].metered
    assert seen["hidden"] is None, "another key's job looks like no job"
    assert (seen["after"].status, seen["after"].seconds, seen["after"].metered) == ("completed", 8.0, True)
    assert sorted(seen["claims"]) == [False] * 7 + [True]
