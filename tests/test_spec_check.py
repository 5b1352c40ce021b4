"""A bad spec fails `engine check` and start-up, naming the file and the key, never a live request."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.spec.loader import SpecError, load_specs
from engine.spec.schema import PUBLISHED, render
from tests.conftest import REPO, SPECS
from tests.servers import ENGINE

GOOD_PROVIDER = """
[provider]
id = "acme"
name = "Acme"
wire = "openai_chat"
base_url = "https://api.acme.test/v1"
[auth]
env = "ACME_API_KEY"
[models."acme/one"]
upstream = "one"
"""


def specs_with(tmp_path: Path, filename: str, text: str) -> Path:
    root = tmp_path / "specs"
    shutil.copytree(SPECS, root)
    (root / "providers" / filename).write_text(text)
    return root


def problems(root: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_specs(root)
    return caught.value.problems


def test_the_shipped_specs_pass() -> None:
    specs = load_specs(SPECS)
    assert specs.providers and specs.routes.routes


def test_published_schemas_match_the_models() -> None:
    """specs/schema/*.json are generated (`engine schema`); editing the models without them fails here."""
    for filename, model in PUBLISHED.items():
        assert (SPECS / "schema" / filename).read_text() == render(model), f"run `engine schema` ({filename})"


def test_the_broken_fixture_names_file_and_every_bad_key(tmp_path: Path) -> None:
    root = specs_with(tmp_path, "broken.toml", (REPO / "tests/fixtures/broken/providers/broken.toml").read_text())
    result = subprocess.run([ENGINE, "check", "--specs", str(root)], capture_output=True, text=True)
    assert result.returncode == 1
    path = str(root / "providers" / "broken.toml")
    for key in ("provider.base_url", 'models."broken/model".tools'):
        assert f"{path}: {key}:" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ('upstream = "one"', 'upstream = "one"\ntools = "yes"', "models.\"acme/one\".tools: 'yes' is not of type"),
        (
            'name = "Acme"',
            'name = "Acme"\ncolour = "red"',
            "provider: Additional properties are not allowed ('colour' was unexpected)",
        ),
        ('name = "Acme"', 'name = "Acme"\npriority = "high"', "provider.priority:"),
        ('wire = "openai_chat"', 'wire = "carrier_pigeon"', "provider.wire: unknown wire 'carrier_pigeon'"),
        ("[auth]", '[[mappings]]\nwhen = "request.tools and"\n[auth]', "mappings[0].when: does not compile"),
        ("[auth]", '[[mappings]]\nwhen = "reqest.tools"\n[auth]', "mappings[0].when: reads unknown name(s) reqest"),
        ("[auth]", '[[mappings]]\ndrop = ["messages[.name"]\n[auth]', "mappings[0].drop[0]:"),
        ("[auth]", '[[wire_rules]]\nwhen = "request.tools"\nwire = "nope"\nwhy = "x"\n[auth]', "wire_rules[0].wire:"),
        ("[auth]", '[[error_rules]]\nname = "x"\nwhen = "request.tools"\n[auth]', "error_rules[0].when: reads unknown"),
        ('[models."acme/one"]\nupstream = "one"', "[models]", "models: {} should be non-empty"),
        ('id = "acme"', 'id = "openai"', "provider.id: 'openai' is already used by"),
        ("[auth]", "[auth", "not valid TOML"),
    ],
    ids=[
        "wrong-type",
        "unknown-key",
        "wrong-type-nested",
        "unknown-wire",
        "bad-expression",
        "typo-in-expression",
        "bad-path",
        "rule-to-unknown-wire",
        "error-rule-reads-request",
        "no-models",
        "duplicate-id",
        "bad-toml",
    ],
)
def test_each_problem_names_file_and_key(tmp_path: Path, replace: str, by: str, expected: str) -> None:
    assert replace in GOOD_PROVIDER
    root = specs_with(tmp_path, "acme.toml", GOOD_PROVIDER.replace(replace, by, 1))
    found = problems(root)
    assert any(str(root / "providers" / "acme.toml") in p and expected in p for p in found), found


def test_a_good_new_provider_needs_no_python(tmp_path: Path) -> None:
    root = specs_with(tmp_path, "acme.toml", GOOD_PROVIDER)
    specs = load_specs(root)
    assert "acme" in {f.spec.provider.id for f in specs.providers}


def test_routes_must_keep_proxied_operations_behind_gateway_keys(tmp_path: Path) -> None:
    root = tmp_path / "specs"
    shutil.copytree(SPECS, root)
    routes = (root / "routes.toml").read_text()
    (root / "routes.toml").write_text(
        routes.replace('operation = "chat.completions"', 'operation = "chat.completions"\nauth = "none"')
    )
    assert any("auth: operation 'chat.completions' needs auth" in p for p in problems(root))


def test_serve_refuses_to_start_on_a_broken_spec(tmp_path: Path) -> None:
    root = specs_with(tmp_path, "acme.toml", GOOD_PROVIDER.replace('upstream = "one"', "upstream = 1"))
    result = subprocess.run(
        [ENGINE, "serve", "--specs", str(root), "--port", "1"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert 'acme.toml: models."acme/one".upstream' in result.stderr


def test_engine_lower_prints_the_upstream_request_with_the_key_redacted(tmp_path: Path) -> None:
    request = json.dumps({"model": "openai/gpt-5.5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    result = subprocess.run(
        [ENGINE, "lower"],
        input=request,
        capture_output=True,
        text=True,
        env={"OPENAI_API_KEY": "sk-live-secret", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["url"] == "https://api.openai.com/v1/chat/completions"
    assert shown["wire"] == "openai_chat" and shown["why"]
    assert shown["headers"]["Authorization"] == "Bearer [redacted]"
    assert shown["body"] == {
        "model": "gpt-5.5",
        "max_completion_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert "sk-live-secret" not in result.stdout
