"""The resolver's decision table for the shipped specs, pinned as a snapshot (tests/snapshots/): for every
public model, the candidates in the order they are tried, with what bounds each attempt; and for every
kind of failed attempt, what the attempt policy does next. A spec change that reorders providers, changes a
retry or timeout, or makes a failure retryable shows up here as a reviewable diff."""

from __future__ import annotations

from typing import Any

from syrupy.assertion import SnapshotAssertion

from engine.attempts import Policy
from engine.catalog import Catalog, _priority
from engine.errors import Failure, Kind
from engine.spec.loader import load_specs
from engine.spec.models import Retry
from tests.conftest import SPECS


def candidates_table() -> dict[str, Any]:
    """Per public model, its candidates in the order tried; per provider, what bounds an attempt there."""
    catalog = Catalog.from_specs(load_specs(SPECS), env={})
    models = {}
    for public_id in sorted(catalog.public_ids()):
        models[public_id] = [
            f"{c.provider.id} (priority {_priority(c)}" + (f", weight {c.row.weight:g})" if c.row.weight else ")")
            for c in catalog.all_candidates(public_id)
        ]
    providers = {}
    for provider in sorted(catalog.providers.values(), key=lambda p: p.id):
        spec = provider.spec
        t = spec.timeouts
        providers[provider.id] = (
            f"{spec.retry.max_retries} retries, backoff {spec.retry.backoff_initial:g}..{spec.retry.backoff_max:g} s;"
            f" timeouts pool {t.pool:g}, connect {t.connect:g}, first byte {t.first_byte_s:g},"
            f" idle {t.idle_s:g}, total {t.total:g} s; {spec.pool.connections} connections"
        )
    return {"models": models, "providers": providers}


SCENARIOS: dict[str, Failure] = {
    "refused": Failure(Kind.REFUSED, sent=False),
    "connect timeout": Failure(Kind.CONNECT_TIMEOUT, sent=False),
    "pool timeout": Failure(Kind.POOL_TIMEOUT, sent=False),
    "first byte timeout (sent)": Failure(Kind.FIRST_BYTE_TIMEOUT, sent=True),
    "dropped after sending": Failure(Kind.DROPPED, sent=True),
    "idle timeout": Failure(Kind.IDLE_TIMEOUT, sent=True),
    "total timeout": Failure(Kind.TOTAL_TIMEOUT, sent=True),
    "not the protocol": Failure(Kind.INVALID, sent=True),
    "client deadline": Failure(Kind.DEADLINE, sent=True),
    **{f"HTTP {s}": Failure(Kind.STATUS, True, s) for s in (400, 401, 402, 403, 404, 408, 409, 413, 422, 429)},
    "HTTP 429 insufficient_quota": Failure(Kind.STATUS, True, 429, "insufficient_quota"),
    "HTTP 429 retry-after 3 s": Failure(Kind.STATUS, True, 429, "rate_limit_exceeded", 3.0),
    "HTTP 429 retry-after 60 s": Failure(Kind.STATUS, True, 429, "rate_limit_exceeded", 60.0),
    **{f"HTTP {s}": Failure(Kind.STATUS, True, s) for s in (500, 501, 502, 503, 504)},
}


def decisions_table() -> dict[str, dict[str, str]]:
    policy = Policy(load_specs(SPECS).routes.fallback)
    retry = Retry()
    table = {}
    for name, failure in SCENARIOS.items():
        first = policy.decide(failure, retry, 0)
        spent = policy.decide(failure, retry, retry.max_retries)
        table[name] = {"first failure": first.step.value, "retries used up": spent.step.value, "why": first.why}
    return table


def test_the_candidates_of_every_public_model(snapshot_json: SnapshotAssertion) -> None:
    assert candidates_table() == snapshot_json


def test_what_follows_each_kind_of_failed_attempt(snapshot_json: SnapshotAssertion) -> None:
    assert decisions_table() == snapshot_json
