"""The operations table is the one list of operations: routes, model rows and the CLI read it, and a model
called on an operation its row does not list is refused before any upstream call."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from engine.app import build_app
from engine.gateway import Gateway
from engine.operations import OPERATIONS
from engine.spec.loader import SpecError, load_specs
from tests.conftest import SPECS, create_key
from tests.test_spec_check import GOOD_PROVIDER
from tests.test_spec_check import specs_with as spec_dir_with

EMBEDDER = GOOD_PROVIDER + 'operations = ["embeddings"]\n'


def specs_with(tmp_path: Path, provider: str) -> Path:
    return spec_dir_with(tmp_path, "acme.toml", provider)


def test_every_shipped_route_names_a_row_of_the_table() -> None:
    routes = tomllib.loads((SPECS / "routes.toml").read_text())["routes"]
    assert {r["operation"] for r in routes} <= set(OPERATIONS)
    for name, row in OPERATIONS.items():
        assert row.name == name
        if row.resolve == "none":
            assert row.body == "none" and row.shape is None
        else:
            assert row.shape and row.answers, f"{name}: a proxied row names its client shape and answers"


def test_an_unknown_operation_fails_the_spec_check_naming_the_known_ones(tmp_path: Path) -> None:
    root = specs_with(tmp_path, EMBEDDER.replace('["embeddings"]', '["embedings"]'))
    with pytest.raises(SpecError) as caught:
        load_specs(root)
    [problem] = caught.value.problems
    assert "acme.toml" in problem and 'models."acme/one".operations[0]' in problem
    assert "'embedings' is not one of" in problem and "'embeddings'" in problem


def test_a_model_called_on_an_operation_it_does_not_serve_is_a_400_naming_what_it_serves(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500))
    db = str(tmp_path / "db.sqlite3")
    gw = Gateway.build(specs_with(tmp_path, EMBEDDER), db, transport, env={"ACME_API_KEY": "k"})
    key = create_key(db, prefix=gw.specs.routes.gateway.key_prefix)
    body: dict[str, Any] = {"model": "acme/one", "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(build_app(gw)) as client:
        answer = client.post("/external/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "message": "The model `acme/one` does not serve `chat.completions`; it serves `embeddings`. Pick a"
        " model that serves this endpoint (GET /models lists each model's `operations`).",
        "type": "invalid_request_error",
        "param": "model",
        "code": "unsupported_operation",
    }
    assert [r.url for r in sent if r.url.host == "api.acme.test"] == [], "refused before any upstream call"
