"""`engine catalog import`: models.dev-shaped data → a reviewable diff of our TOML, never of code.

tests/fixtures/models_dev/ is a small tree in models.dev's layout whose values differ from specs/ on
purpose. The import runs on a copy of specs/, so what it changes is exactly what a reviewer would see.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.spec.loader import load_specs
from tests.conftest import SPECS

DATA = Path(__file__).parent / "fixtures" / "models_dev"
CHANGED = {
    "models/anthropic/claude-haiku-4.5.toml",  # price: from its own entry
    "models/anthropic/claude-sonnet-4.6.toml",  # output limit: from the base_model the entry inherits
    "providers/openrouter.toml",  # OpenRouter's own, larger output limit: an override in its row
    "providers/mistral.toml",  # Codestral's context and output limit: keys of the row itself
}


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    copy = tmp_path / "specs"
    shutil.copytree(SPECS, copy)
    return copy


def texts(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.toml"))}


def test_dry_run_prints_the_diff_and_writes_nothing(specs: Path, capsys: Any) -> None:
    before = texts(specs)
    assert main(["catalog", "import", str(DATA), "--specs", str(specs), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert texts(specs) == before
    assert {line[len("+++ b/specs/") :] for line in out.splitlines() if line.startswith("+++ ")} == CHANGED
    assert "-price = { input = 1.00, output = 5.00, cached_input = 0.10, cache_write = 1.25 }" in out
    assert "+price = { input = 1.10, output = 5.00, cached_input = 0.10, cache_write = 1.375 }" in out
    assert "-context = 256000\n+context = 262144\n" in out and "+max_output = 32768" in out
    assert "not refreshed: providers/anthropic.toml: anthropic/claude-opus-4.8: no models.dev entry" in err
    assert "not refreshed: providers/openai.toml: no providers/openai/ in this data" in err
    assert "4 file(s) would change" in err


def test_import_rewrites_values_and_keeps_every_hand_written_line(specs: Path, capsys: Any) -> None:
    before = texts(specs)
    assert main(["catalog", "import", str(DATA), "--specs", str(specs)]) == 0
    after = texts(specs)
    assert {name for name in after if after[name] != before[name]} == CHANGED
    for name in CHANGED:  # comments, mappings and their whys, quirks: every line not refreshed stays
        kept = [line for line in before[name].splitlines() if "price" not in line and "context" not in line]
        kept = [line for line in kept if "max_output" not in line]
        assert all(line in after[name].splitlines() for line in kept), name

    loaded = load_specs(specs)  # the refreshed specs pass engine check
    rows = {(f.spec.provider.id, public): row for f in loaded.providers for public, row in f.spec.models.items()}
    haiku = rows[("anthropic", "anthropic/claude-haiku-4.5")]
    assert haiku.price is not None and (haiku.price.input, haiku.price.cache_write) == (1.10, 1.375)
    assert rows[("anthropic", "anthropic/claude-sonnet-4.6")].max_output == 96000
    assert rows[("anthropic", "anthropic/claude-sonnet-4.6")].structured_output is False, "a codec fact, kept"
    openrouter = rows[("openrouter", "anthropic/claude-sonnet-4.6")]
    assert (openrouter.max_output, openrouter.context) == (128000, 1000000), "base_model merged deeply"
    codestral = rows[("mistral", "mistralai/codestral")]
    assert (codestral.context, codestral.max_output, codestral.tools) == (262144, 32768, True)

    capsys.readouterr()
    assert main(["catalog", "import", str(DATA), "--specs", str(specs)]) == 0
    assert "catalog is up to date" in capsys.readouterr().out
    assert texts(specs) == after


def test_a_directory_that_is_not_models_dev_data_is_refused(specs: Path, tmp_path: Path, capsys: Any) -> None:
    assert main(["catalog", "import", str(tmp_path / "nowhere"), "--specs", str(specs)]) == 2
    assert "no providers/ directory" in capsys.readouterr().err
