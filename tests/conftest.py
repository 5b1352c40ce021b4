"""Shared fixtures: paths, the spec corpus, and snapshot storage under tests/snapshots/."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
REQUESTS = Path(__file__).parent / "requests"


class ReviewableJSON(JSONSnapshotExtension):
    """One pretty JSON file per test case in tests/snapshots/<module>/, so a wire change is a readable diff."""

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        return str(Path(test_location.filepath).parent / "snapshots" / test_location.basename)


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(ReviewableJSON)


def load_corpus(directory: Path) -> dict[str, dict[str, Any]]:
    """Canonical client requests or recorded answers: the JSON files of a directory, by file stem."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


# ------------------------------------------------------------------ end-to-end: real processes on loopback

PROVIDER_KEY = "sk-test-SECRETKEY-0123456789"
GEMINI_KEY = "gemini-test-KEY-0123456789"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def content_chunk(text: str, model: str = "gpt-4.1") -> dict[str, Any]:
    """One streamed chat chunk carrying `text`, as an upstream sends it mid-answer."""
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


def completion(prompt: int = 12, completion: int = 7) -> dict[str, Any]:
    """A whole chat completion as an upstream answers it, with its usage (for scripted upstream answers)."""
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


@pytest.fixture(scope="session")
def fake() -> Any:
    from tests.servers import run_fake

    with run_fake() as running:
        yield running


@pytest.fixture(scope="session")
def gemini_fake() -> Any:
    """The Gemini API fake (tests/fakes/gemini_fake.py), behind the shared gateway as provider `gemini`."""
    from tests.servers import run_fake

    with run_fake("tests.fakes.gemini_fake", "/v1beta", "--key", GEMINI_KEY) as running:
        yield running


def e2e_provider_env(openai_url: str, gemini_url: str, gemini_key: str) -> dict[str, str]:
    """The providers the end-to-end gateway serves, all pointed at the fakes (OpenAI's also speaks
    Anthropic's Messages wire); the fuzzing harness (tests/hardening/fuzz.py) uses the same."""
    return {
        "GEMINI_API_KEY": gemini_key,
        "GEMINI_BASE_URL": gemini_url,
        "OPENAI_API_KEY": PROVIDER_KEY,
        "OPENAI_BASE_URL": openai_url,
        "SLOWPOKE_API_KEY": "sk-slow-000000",
        "SLOWPOKE_BASE_URL": openai_url,
        "NOWHERE_API_KEY": "sk-nowhere-000000",
        "GROQ_API_KEY": "gsk-test-000000000000",
        "ANTHROPIC_API_KEY": "sk-ant-test-000000000000",
        "ANTHROPIC_BASE_URL": openai_url,
        "GROQ_BASE_URL": openai_url,
        "OPENROUTER_API_KEY": "sk-or-test-000000000000",
        "OPENROUTER_BASE_URL": openai_url,
        "UNDERSTUDY_API_KEY": "sk-understudy-000000",
        "UNDERSTUDY_BASE_URL": openai_url,
    }


@pytest.fixture(scope="session")
def gateway(fake: Any, gemini_fake: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.servers import run_gateway

    env = e2e_provider_env(fake.url, gemini_fake.url, GEMINI_KEY)
    with run_gateway(tmp_path_factory.mktemp("gateway"), env) as running:
        yield running


@pytest.fixture
def upstream(fake: Any) -> Any:
    """The fake upstream, with its request log and script cleared for this test."""
    fake.reset()
    return fake


@pytest.fixture
def client(gateway: Any) -> Any:
    """The official OpenAI SDK, pointed at the gateway with a gateway key."""
    import openai

    return openai.OpenAI(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=20)


@pytest.fixture
def http(gateway: Any) -> Any:
    """Raw HTTP to the gateway, authenticated, for what the SDK hides (headers, raw bodies)."""
    import httpx

    with httpx.Client(base_url=gateway.root, headers={"Authorization": f"Bearer {gateway.key}"}, timeout=20) as session:
        yield session


# ------------------------------------------------------------------ storage backends


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def create_key(db_url: str, name: str = "t", prefix: str = "compose-", **limits: Any) -> str:
    """A gateway key in the database at `db_url`, for in-process tests (outside any event loop)."""
    import asyncio

    from engine.storage import open_database

    async def create() -> str:
        db = open_database(db_url)
        await db.open()
        try:
            return await db.create_key(name, prefix, limits=limits)
        finally:
            await db.close()

    return asyncio.run(create())


@pytest.fixture(scope="session")
def pg_server() -> Any:
    """A PostgreSQL server for the session (skips what needs it, saying why, where none can start)."""
    from tests.backends import Unavailable, run_postgres

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(run_postgres())
        except Unavailable as exc:
            pytest.skip(f"PostgreSQL tests skipped: {exc}")
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Any:
    """A Redis server for the session (skips what needs it, saying why, where none can start)."""
    from tests.backends import Unavailable, run_redis

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(run_redis())
        except Unavailable as exc:
            pytest.skip(f"Redis tests skipped: {exc}")
        yield server


_databases = itertools.count()


async def fresh_postgres(pg_server: Any) -> str:
    """The URL of a new, empty database on the session's server."""
    import asyncpg

    name = f"t{os.getpid()}_{next(_databases)}"
    conn = await asyncpg.connect(pg_server.url())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return str(pg_server.url(name))


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A migrated, empty database of each backend."""
    from engine.storage import open_database

    if request.param == "postgresql":
        url = await fresh_postgres(request.getfixturevalue("pg_server"))
    else:
        url = f"sqlite:///{tmp_path}/engine.sqlite3"
    db = open_database(url)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> Any:
    """An empty limiter of each backend."""
    from engine.storage import open_limiter

    url = None
    if request.param == "redis":
        import redis.asyncio as aioredis

        url = request.getfixturevalue("redis_server").url()
        flush = aioredis.Redis.from_url(url)
        await flush.flushdb()
        await flush.aclose()
    limiter = open_limiter(url)
    try:
        yield limiter
    finally:
        await limiter.close()


# ------------------------------------------------------------------ in process: tests/inprocess.py


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One in-process gateway (shipped specs + tests/fixtures/providers) per test module."""
    from tests.inprocess import InProcess

    with InProcess(tmp_path_factory.mktemp("inprocess")) as running:
        yield running


@pytest.fixture
def gw(shipped: Any) -> Any:
    """The module's in-process gateway, its upstream scripts and request log cleared for this test."""
    return shipped.reset()
