"""The embedded database (SQLite): gateway keys, stored hashed, never in clear.

A key is `<prefix><id>_<secret>`. The id is a lookup handle stored in clear; only SHA-256 of the whole
key is stored, and the check compares digests in constant time. SHA-256 (not a slow KDF) is right here
because keys are 256-bit random strings, not passwords: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SCHEMA = """
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
"""

UsageRow = tuple[str, str, str, str, int, int, int, int, int, float]


def default_db_path() -> Path:
    """`ENGINE_DB`, else `var/engine.sqlite3` in the checkout (ignored by git)."""
    configured = os.environ.get("ENGINE_DB")
    return Path(configured) if configured else REPO_ROOT / "var" / "engine.sqlite3"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    created_at: int
    revoked_at: int | None


class StoreError(Exception):
    """A key operation that cannot be done (duplicate name, unknown name)."""


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def create_key(self, name: str, prefix: str) -> str:
        key_id = secrets.token_hex(6)
        key = f"{prefix}{key_id}_{secrets.token_urlsafe(32)}"
        try:
            self._db.execute(
                "INSERT INTO keys (id, name, digest, created_at) VALUES (?, ?, ?, ?)",
                (key_id, name, digest(key), int(time.time())),
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"a key named {name!r} already exists") from None
        return key

    def list_keys(self) -> list[KeyRecord]:
        rows = self._db.execute("SELECT id, name, created_at, revoked_at FROM keys ORDER BY created_at, name")
        return [KeyRecord(*row) for row in rows]

    def revoke_key(self, name: str) -> None:
        cursor = self._db.execute(
            "UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (int(time.time()), name)
        )
        if cursor.rowcount == 0:
            raise StoreError(f"no active key named {name!r}")

    def add_usage(self, rows: list[UsageRow]) -> None:
        """Fold usage tallies into the daily aggregates, in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                """INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (key_id, day, model, provider) DO UPDATE SET
                    requests = requests + excluded.requests,
                    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = completion_tokens + excluded.completion_tokens,
                    cached_tokens = cached_tokens + excluded.cached_tokens,
                    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
                    cost_usd = cost_usd + excluded.cost_usd""",
                rows,
            )

    def usage_by_key(self) -> dict[str, tuple[int, int, int, float]]:
        """key id → (requests, prompt tokens, completion tokens, cost in USD), all time."""
        rows = self._db.execute(
            "SELECT key_id, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd) "
            "FROM usage GROUP BY key_id"
        )
        return {row[0]: row[1:] for row in rows}

    def verify(self, key: str, prefix: str) -> KeyRecord | None:
        """The active key record for `key`, or None. Unknown, malformed and revoked keys look alike."""
        if not key.startswith(prefix):
            return None
        key_id, sep, _ = key[len(prefix) :].partition("_")
        if not sep:
            return None
        row = self._db.execute(
            "SELECT id, name, created_at, revoked_at, digest FROM keys WHERE id = ?", (key_id,)
        ).fetchone()
        presented = digest(key)
        if row is None:
            hmac.compare_digest(presented, presented)  # same work whether or not the id exists
            return None
        if not hmac.compare_digest(presented, row[4]) or row[3] is not None:
            return None
        return KeyRecord(*row[:4])
