"""Recorded upstream errors from every shipped provider, and what the client gets for each: the error rules
as a reviewer reads them. tests/errors/<provider>/ holds the recordings (`{"status", "body" | "raw"}` JSON,
or an SSE stream); each is answered through `engine.explain`, the same path `engine lower --error` prints,
and pinned with the rule that decided it. A new provider spec must come with recordings of its own.

Whatever the snapshot, some things must hold for every recording, and are asserted here: a content filter
in any shape is the one content-filter error, and no client body carries a URL, a host, a key or an
upstream id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from engine.catalog import Catalog
from engine.error_rules import compile_error_rules
from engine.explain import explain
from engine.sanitize import Sanitizer
from engine.spec.loader import load_specs
from tests.conftest import PROVIDER_KEY, SPECS

RECORDED = Path(__file__).parent / "errors"
CASES = sorted(p for p in RECORDED.glob("*/*") if p.suffix in (".json", ".sse"))
SHIPPED = load_specs(SPECS)
CATALOG = Catalog.from_specs(SHIPPED, env={p.spec.auth.env: PROVIDER_KEY for p in SHIPPED.providers})
SHARED = compile_error_rules(SHIPPED.routes.error_rules)
# What must never reach a client body: addresses, hosts, account and key ids, the provider key.
LEAKS = re.compile(
    r"https?://|[a-z0-9-]+\.(?:com|net|io|ai|xyz)\b|\borg[-_][a-z0-9]{6,}|API key ID|Team:|SECRETKEY", re.I
)


def sanitizer(provider: str) -> Sanitizer:
    return Sanitizer.build(CATALOG.providers[provider], SHARED, SHIPPED.routes.sanitize.redact_patterns)


def answered(path: Path) -> dict[str, Any]:
    if path.suffix == ".sse":
        return explain(sanitizer(path.parent.name), 200, path.read_bytes(), stream=True)
    recorded = json.loads(path.read_text())
    raw = recorded["raw"].encode() if "raw" in recorded else json.dumps(recorded["body"]).encode()
    return explain(sanitizer(path.parent.name), recorded["status"], raw)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}--{p.stem}" for p in CASES])
def test_recorded_upstream_errors(path: Path, snapshot_json: Any) -> None:
    result = answered(path)
    client = result.get("client")
    assert client is not None, f"{path.name} is not read as an error: {result['delivered']}"
    assert not LEAKS.search(json.dumps(client["body"])), client["body"]
    if path.stem.startswith("content_filter") or "filtered" in path.stem:
        assert client["status"] == 400 and client["body"]["error"]["code"] == "content_filter"
        assert client["body"] == CONTENT_FILTER, "every content filter is the same error"
    assert result == snapshot_json


CONTENT_FILTER = {
    "error": {
        "message": next(r.message for r in SHIPPED.routes.error_rules if r.name == "content-filter"),
        "type": "invalid_request_error",
        "param": "messages",
        "code": "content_filter",
    }
}


def test_every_shipped_provider_has_recorded_errors() -> None:
    recorded = {p.parent.name for p in CASES}
    missing = sorted(p.spec.provider.id for p in SHIPPED.providers if p.spec.provider.id not in recorded)
    assert not missing, f"add tests/errors/<provider>/ recordings for {missing}"


def test_the_offline_command_prints_the_same_answer(tmp_path: Path) -> None:
    import subprocess

    from tests.servers import ENGINE

    path = RECORDED / "azure" / "content_filter_innererror_singular.json"
    body = tmp_path / "body.json"
    body.write_text(json.dumps(json.loads(path.read_text())["body"]))
    result = subprocess.run(
        [ENGINE, "lower", "--error", str(body), "--status", "400", "--provider", "azure"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["rule"] == "azure-content-filter" and shown["answers_as"] == "content-filter"
    assert shown["client"]["body"] == CONTENT_FILTER
