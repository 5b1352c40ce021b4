"""Limits and the usage ledger, A/B against the request path from before them, on each storage backend (issue 12).

    .venv/bin/python bench/limits.py --backend sqlite   -- --rounds 8 --concurrency 16
    .venv/bin/python bench/limits.py --backend pg-redis -- --rounds 8 --concurrency 16
    .venv/bin/python bench/limits.py --backend pg-redis --order base-first -- ...   # the same, other order
    .venv/bin/python bench/limits.py --backend sqlite --order same -- ...           # A/A: this tree twice

`--order` exists because run.py's interleaving is not free of position: an A/A run has read several per cent
more CPU for whichever gateway runs first. A claim is the mean of both orders, with an A/A run beside it.

`bench/run.py` does the measuring (one interleaved run, CPU per request from /proc); this script only starts
what the backend needs and hands run.py two engine commands:

- `gateway` is this checkout with every limit on for the bench key (rpm, tpm, concurrency, daily and
  monthly budgets, all far above what the run uses), so every request is admitted, settled and recorded
  as one ledger row. With `pg-redis` it runs on a PostgreSQL and a Redis started on loopback for the run
  (tests/backends.py: temporary directories, stopped at the end; pinned off the gateways' CPU, as run.py
  pins the fake), i.e. `ENGINE_DB=postgresql://…` and `ENGINE_REDIS=redis://…`.
- `gateway-b` is the request path before limits and the ledger: by default this checkout run through
  bench/limits_before.py (no admission, the old in-memory daily tally instead of ledger rows), or a `--base`
  checkout; on run.py's SQLite file, the only database it had. With `pg-redis`, the bench key is copied into
  that file from PostgreSQL first.

Arguments after `--` go to run.py unchanged. The script is also its own engine wrapper (`engine` sub-command,
used by the commands it gives run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Far above anything a bench run reaches: the limits are checked on every request but never refuse one.
LIMIT_FLAGS = [
    "--rpm",
    "100000000",
    "--tpm",
    "1000000000000",
    "--concurrent",
    "100000",
    "--daily-usd",
    "1000000000",
    "--monthly-usd",
    "1000000000",
]


def copy_keys(postgres_url: str, sqlite_url: str) -> None:
    """The bench key, created in PostgreSQL by `gateway`, into the base's SQLite file (schema made by the base)."""
    import asyncpg

    async def fetch() -> list[tuple[str, str, str, int]]:
        conn = await asyncpg.connect(postgres_url)
        try:
            rows = await conn.fetch("SELECT id, name, digest, created_at FROM keys WHERE revoked_at IS NULL")
        finally:
            await conn.close()
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    rows = asyncio.run(fetch())
    with contextlib.closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as db, db:
        db.executemany("INSERT OR IGNORE INTO keys (id, name, digest, created_at) VALUES (?, ?, ?, ?)", rows)


def copy_keys_to_postgres(sqlite_url: str, postgres_url: str) -> None:
    """The other way (`--order base-first`): the bench key, created by the base in run.py's SQLite file, into
    PostgreSQL (schema made by this tree)."""
    import asyncpg

    path = Path(sqlite_url.removeprefix("sqlite:///"))
    if not path.exists():
        return  # this tree runs first: the key is made here
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            rows = db.execute("SELECT id, name, digest, created_at FROM keys WHERE revoked_at IS NULL").fetchall()
        except sqlite3.OperationalError:  # no keys table yet: this tree runs first
            return

    async def store() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.executemany(
                "INSERT INTO keys (id, name, digest, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", rows
            )
        finally:
            await conn.close()

    asyncio.run(store())


def engine(args: argparse.Namespace, rest: list[str]) -> int:
    """Run one engine command in `--tree`, with the backend's environment (run.py calls this)."""
    tree = Path(args.tree)
    env = dict(os.environ, ENGINE_SPECS=str(tree / "specs"))
    given = env.get("ENGINE_DB", "")  # run.py's SQLite file, before a backend replaces it
    if args.db:
        env["ENGINE_DB"] = args.db
    if args.redis:
        env["ENGINE_REDIS"] = args.redis
    entry = ["-m", "engine.cli"] if not args.before else [str(REPO / "bench" / "limits_before.py")]
    command = [sys.executable, *entry, *rest]
    if rest[:2] == ["keys", "create"] and args.limits:
        command += LIMIT_FLAGS
    if rest[:1] == ["serve"] and args.copy_keys_from:
        made = subprocess.run([sys.executable, "-m", "engine.cli", "keys", "list"], cwd=tree, env=env, timeout=120)
        if made.returncode != 0:
            return made.returncode
        sqlite = env["ENGINE_DB"]
        copy_keys(args.copy_keys_from, sqlite if "://" in sqlite else f"sqlite:///{sqlite}")
    if rest[:1] == ["serve"] and args.limits:
        # The bench key was made by whichever gateway run.py starts first: copied here if that one keeps its keys
        # elsewhere (`--order base-first` on PostgreSQL), and given its limits in any case.
        cli = [sys.executable, "-m", "engine.cli"]
        if args.db and args.db.startswith("postgresql://"):
            made = subprocess.run([*cli, "keys", "list"], cwd=tree, env=env, timeout=120, capture_output=True)
            if made.returncode != 0:
                return made.returncode
            copy_keys_to_postgres(given if "://" in given else f"sqlite:///{given}", args.db)
        updated = subprocess.run([*cli, "keys", "update", "bench", *LIMIT_FLAGS], cwd=tree, env=env, timeout=120)
        if updated.returncode != 0:
            return updated.returncode
    os.chdir(tree)
    os.execve(sys.executable, command, env)


def compare(args: argparse.Namespace, rest: list[str]) -> int:
    me = [sys.executable, str(Path(__file__).resolve()), "engine"]
    with contextlib.ExitStack() as stack:
        new = [*me, "--tree", str(REPO), "--limits"]
        old = [*me, "--tree", str(Path(args.base).resolve())] if args.base else [*me, "--tree", str(REPO), "--before"]
        if args.backend == "pg-redis":
            from tests.backends import run_postgres, run_redis

            cpus = os.sched_getaffinity(0)
            if len(cpus) > 1:  # the servers on the CPUs run.py keeps for the fake and the load, not the gateways'
                os.sched_setaffinity(0, set(sorted(cpus)[1:]))
            try:
                postgres = stack.enter_context(run_postgres())
                redis = stack.enter_context(run_redis())
            finally:
                os.sched_setaffinity(0, cpus)
            new += ["--db", postgres.url(), "--redis", redis.url()]
            if args.order == "new-first":  # the key is made in PostgreSQL first; base-first: see `engine`
                old += ["--copy-keys-from", postgres.url()]
            print(f"PostgreSQL on {postgres.url()}, Redis on {redis.url()}", flush=True)
        first, second = {"new-first": (new, old), "base-first": (old, new), "same": (new, new)}[args.order]
        print(
            f"gateway = {'limits + ledger' if first is new else 'before'}, gateway-b = "
            f"{'limits + ledger' if second is new else 'before'}",
            flush=True,
        )
        command = [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--engine",
            shlex.join([*first, "--"]),
            "--compare-engine",
            shlex.join([*second, "--"]),
            *rest,
        ]
        code = subprocess.run(command, cwd=REPO).returncode
        if args.backend == "pg-redis":
            print(asyncio.run(recorded(postgres.url(), redis.url())))
        return code


async def recorded(postgres_url: str, redis_url: str) -> str:
    """What the run left behind: proof that `gateway` admitted, settled and recorded every request."""
    import asyncpg
    import redis.asyncio as aioredis

    conn = await asyncpg.connect(postgres_url)
    try:
        rows, spend = await conn.fetchrow("SELECT COUNT(*), COALESCE(SUM(cost_usd), 0) FROM requests") or (0, 0)
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        spent = [float(await client.get(name) or 0) async for name in client.scan_iter("lim:*:usd:*-*-*")]
        stats = await client.info("commandstats")
        syncs = sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))
    finally:
        await client.aclose()
    return (
        f"gateway's ledger: {rows} rows, {spend:.6f} USD; shared limiter's daily spend: {sum(spent):.6f} USD"
        f" (equal: every request settled), in {syncs} limiter scripts run"
    )


def main() -> int:
    argv = sys.argv[1:]
    rest: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, rest = argv[:at], argv[at + 1 :]
    if argv[:1] == ["engine"]:
        wrapper = argparse.ArgumentParser(prog="bench/limits.py engine")
        wrapper.add_argument("--tree", required=True)
        wrapper.add_argument("--db")
        wrapper.add_argument("--redis")
        wrapper.add_argument("--limits", action="store_true")
        wrapper.add_argument("--before", action="store_true", help="run through bench/limits_before.py")
        wrapper.add_argument("--copy-keys-from")
        return engine(wrapper.parse_args(argv[1:]), rest)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "pg-redis"), required=True)
    parser.add_argument("--base", metavar="DIR", help="a checkout to compare with (default: bench/limits_before.py)")
    parser.add_argument(
        "--order",
        choices=("new-first", "base-first", "same"),
        default="new-first",
        help="which runs as `gateway` (first in each round); `same`: this tree twice, an A/A run",
    )
    return compare(parser.parse_args(argv), rest)


if __name__ == "__main__":
    raise SystemExit(main())
