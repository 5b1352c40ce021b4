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


# ------------------------------------------------------------------ names and paths are fields


def mapping(block: str) -> str:
    """GOOD_PROVIDER with one `[[mappings]]` block."""
    return GOOD_PROVIDER.replace("[auth]", f"[[mappings]]\n{block}\n[auth]", 1)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            'when = "model.reasonning"\ndrop = ["temperature"]',
            "mappings[0].when: reads model.reasonning, which a model row does not have (did you mean model.reasoning?)",
        ),
        (
            'when = "model.price.imput > 1"\ndrop = ["temperature"]',
            "mappings[0].when: reads model.price.imput, which a model row does not have"
            " (did you mean model.price.input?)",
        ),
        (
            'when = "request.stream_optionz.include_usage"\ndrop = ["temperature"]',
            "mappings[0].when: reads request.stream_optionz, which no chat.completions or responses request has"
            " (did you mean request.stream_options?)",
        ),
        (
            'compute = { max_tokens = "request.messages[-1].contnet and 10" }',
            "mappings[0].compute.max_tokens: reads request.messages[].contnet, which no chat.completions or"
            " responses request has (did you mean request.messages[].content?)",
        ),
        (
            'drop = ["stream_optionz"]',
            "mappings[0].drop[0]: stream_optionz is not a field of the chat.completions or responses request"
            " (did you mean stream_options?)",
        ),
        (
            'drop = ["messages[].contnet"]',
            "mappings[0].drop[0]: messages[].contnet is not a field of the chat.completions or responses"
            " request (did you mean messages[].content?)",
        ),
        (
            'rename = { seed = "random_seed" }',
            "mappings[0].rename.seed: random_seed is not a field of the chat.completions or responses request;"
            " a field of the provider's own is declared in the mapping's `extensions`",
        ),
        (
            'replace = { "messages[].rol" = { developer = "system" } }',
            'mappings[0].replace."messages[].rol": messages[].rol is not a field',
        ),
        (
            'why = "x"\nextensions = ["temperature"]\ndrop = ["temperature"]',
            "mappings[0].extensions[0]: temperature is a field of the chat.completions or responses request"
            " already, not an extension",
        ),
        (
            'why = "x"\nextensions = ["random_seed"]\ndrop = ["seed"]',
            "mappings[0].extensions[0]: random_seed is not a path this block renames, drops or sets",
        ),
        (
            'extensions = ["random_seed"]\nrename = { seed = "random_seed" }',
            "mappings[0]: 'why' is a dependency of 'extensions'",
        ),
        (
            'stage = "wire"\nwhy = "x"\nextensions = ["random_seed"]\ndrop = ["random_seed"]',
            "mappings[0].extensions: a wire-stage block works on the provider's own body",
        ),
        (
            "when = \"operation in ('chat.completions', 'responsez')\"\ndrop = [\"temperature\"]",
            "mappings[0].when: compares operation with 'responsez', which is no operation (did you mean 'responses'?)",
        ),
    ],
    ids=[
        "model-typo",
        "nested-model-typo",
        "request-typo",
        "request-typo-in-a-message",
        "path-typo",
        "nested-path-typo",
        "undeclared-extension",
        "path-typo-in-replace",
        "extension-that-is-a-field",
        "extension-the-block-does-not-name",
        "extension-without-why",
        "extension-on-a-wire-block",
        "no-such-operation",
    ],
)
def test_every_name_and_path_is_a_field(tmp_path: Path, block: str, expected: str) -> None:
    """`model.reasonning` or `drop = ["stream_optionz"]` would silently never fire: refused, with a suggestion."""
    found = problems(specs_with(tmp_path, "acme.toml", mapping(block)))
    assert any("acme.toml: " + expected in p for p in found), found


def test_a_declared_provider_extension_is_accepted_and_readable_by_other_blocks(tmp_path: Path) -> None:
    text = mapping(
        'why = "Acme names the seed random_seed."\nextensions = ["random_seed", "thinking.budget"]\n'
        'rename = { seed = "random_seed" }\nset = { "thinking.budget" = 1024 }'
    ).replace(
        "[auth]",
        '[[mappings]]\nwhen = "request.random_seed and request.thinking.budget"\ndrop = ["thinking"]\n'
        '[[wire_rules]]\nwhen = "request.thinking"\nwire = "openai_chat"\nwhy = "x"\n[auth]',
        1,
    )
    specs = load_specs(specs_with(tmp_path, "acme.toml", text))
    [acme] = [f.spec for f in specs.providers if f.spec.provider.id == "acme"]
    assert acme.mappings[0].extensions == ["random_seed", "thinking.budget"]


def test_a_request_field_of_another_operation_is_a_field_only_where_the_rows_serve_it(tmp_path: Path) -> None:
    """`encoding_format` is an embeddings field: a chat provider mapping it is told so; an embeddings one is not."""
    chat = problems(specs_with(tmp_path / "chat", "acme.toml", mapping('drop = ["encoding_format"]')))
    assert any("acme.toml: mappings[0].drop[0]: encoding_format is not a field" in p for p in chat), chat
    embeddings = mapping('drop = ["encoding_format"]').replace(
        'upstream = "one"', 'upstream = "one"\noperations = ["embeddings"]'
    )
    load_specs(specs_with(tmp_path / "embeddings", "acme.toml", embeddings))


def test_wire_stage_paths_are_the_providers_own_body(tmp_path: Path) -> None:
    """After the codec the body is the provider's: its paths have no schema here and are not held to one."""
    load_specs(specs_with(tmp_path, "acme.toml", mapping('stage = "wire"\ndrop = ["generationConfig.topK"]')))


def test_a_substring_test_on_operation_is_not_a_comparison_with_an_operation(tmp_path: Path) -> None:
    block = "when = \"'chat' in operation or operation != 'embeddings'\"\ndrop = [\"temperature\"]"
    load_specs(specs_with(tmp_path, "acme.toml", mapping(block)))


def test_a_url_template_reads_model_row_fields(tmp_path: Path) -> None:
    text = GOOD_PROVIDER.replace(
        'base_url = "https://api.acme.test/v1"',
        'base_url = "https://api.acme.test/v1"\nurl_form = "d"',
    ).replace("[auth]", '[url_forms.d]\npaths = { chat = "/d/{{ model.upstreem }}/chat" }\n[auth]', 1)
    found = problems(specs_with(tmp_path, "acme.toml", text))
    expected = "url_forms.d.paths.chat: reads model.upstreem, which a model row does not have (did you mean"
    assert any(expected in p for p in found), found


def test_every_mistake_of_every_kind_in_every_file_is_reported_in_one_run(tmp_path: Path) -> None:
    """A schema problem in a file no longer hides that file's expression problems, nor a broken profile or
    facts file's users' own problems; each is listed once, as `file: key: reason`."""
    root = specs_with(
        tmp_path,
        "acme.toml",
        mapping('when = "model.reasonning"\ndrop = ["messages[].contnet"]').replace(
            'name = "Acme"', 'name = "Acme"\ncolour = "red"'
        ),
    )
    profile = root / "profiles" / "openai-api.toml"
    profile.write_text(
        profile.read_text().replace('drop = ["messages[].reasoning_content"]', 'drop = ["stop_optionz"]')
    )
    routes = root / "routes.toml"
    routes.write_text(routes.read_text().replace('when = "status < 500"', 'when = "status < 500 and error.cdoe"', 1))
    groq = root / "providers" / "groq.toml"
    groq.write_text(groq.read_text().replace("priority = 20", "priority = 'high'", 1))
    result = subprocess.run([ENGINE, "check", "--specs", str(root)], capture_output=True, text=True)
    assert result.returncode == 1
    acme, groq_path = root / "providers" / "acme.toml", root / "providers" / "groq.toml"
    expected = [
        f"{acme}: provider: Additional properties are not allowed ('colour' was unexpected)",
        f"{acme}: mappings[0].when: reads model.reasonning, which a model row does not have",
        f"{acme}: mappings[0].drop[0]: messages[].contnet is not a field",
        f"{profile}: mappings[0].drop[0]: stop_optionz is not a field of the request of any operation",
        f"{routes}: error_rules[",
        "reads error.cdoe, which an upstream error does not have (did you mean error.code?)",
        f"{groq_path}: provider.priority: 'high' is not of type 'integer'",
    ]
    for line in expected:
        assert line in result.stderr, (line, result.stderr)
    lines = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert len(lines) == len(set(lines)), "a problem is listed twice"
    assert not any("no profile" in line for line in lines)


def test_a_profile_that_does_not_load_is_not_also_missing_for_its_providers(tmp_path: Path) -> None:
    root = tmp_path / "specs"
    shutil.copytree(SPECS, root)
    profile = root / "profiles" / "openai-api.toml"
    profile.write_text(profile.read_text().replace("why =", "whyy =", 1))
    found = problems(root)
    assert found and all(str(profile) in p for p in found), found


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
