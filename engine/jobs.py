"""Asynchronous jobs (video generation): the gateway's own job ids, mapped to the provider's.

A client never sees an upstream job id: the gateway issues `video_<random>` and stores, with it, the key
that created the job, the provider and public model that serve it, and the upstream id. Lookups are by
(job id, key), so another key's job is indistinguishable from one that does not exist (a 404, not a 403).
A finished job is metered once: `claim_metering` succeeds for exactly one caller.

Jobs live in the gateway's database (`engine.storage`, interface `JobStore`, in the versioned schema):
the embedded SQLite, or the PostgreSQL every instance shares, so a job created on one is polled on another.
"""

from __future__ import annotations

import secrets

from engine.storage.base import Job, JobStore

__all__ = ["Job", "JobStore", "new_job_id"]


def new_job_id(prefix: str = "video_") -> str:
    return f"{prefix}{secrets.token_hex(16)}"
