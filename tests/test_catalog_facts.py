"""Model facts written once (specs/models/<maker>/<model>.toml) and referenced by every provider row that
serves the model; a row's own keys win. A missing or bad facts file fails `engine check` by file and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.spec.loader import SpecError, load_specs
from engine.spec.models import ModelRow
from tests.conftest import SPECS

SHIPPED = load_specs(SPECS)


def rows(public_id: str) -> dict[str, ModelRow]:
    return {f.spec.provider.id: f.spec.models[public_id] for f in SHIPPED.providers if public_id in f.spec.models}


def test_a_shared_model_reads_the_same_facts_on_every_provider() -> None:
    served = rows("openai/gpt-oss-120b")
    assert {"groq", "together", "fireworks", "cerebras"} <= served.keys()
    for row in served.values():
        assert (row.tools, row.reasoning, row.context) == (True, True, 131072)


def test_a_row_overrides_the_facts_it_names() -> None:
    served = rows("openai/gpt-oss-120b")
    assert served["cerebras"].max_output == 40960
    assert served["fireworks"].max_output == 32768  # the facts' own limit
    price = served["together"].price
    assert price is not None and price.input == 0.15


def test_openrouter_rows_no_longer_repeat_first_party_rows() -> None:
    text = (SPECS / "providers" / "openrouter.toml").read_text()
    assert "context" not in text.split("[models.", 1)[1], "OpenRouter rows should name facts, not copy them"
    assert rows("openai/gpt-5.5")["openrouter"] == rows("openai/gpt-5.5")["openai"].model_copy(
        update={"upstream": "openai/gpt-5.5"}
    )


def copy_specs(tmp_path: Path) -> Path:
    root = tmp_path / "specs"
    shutil.copytree(SPECS, root)
    return root


def problems(root: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_specs(root)
    return caught.value.problems


def test_an_unknown_facts_name_is_reported_with_file_and_key(tmp_path: Path) -> None:
    root = copy_specs(tmp_path)
    path = root / "providers" / "groq.toml"
    path.write_text(path.read_text().replace('facts = "openai/gpt-oss-20b"', 'facts = "openai/gpt-oss-21b"'))
    assert any(p.startswith(f'{path}: models."openai/gpt-oss-20b".facts: no facts file') for p in problems(root)), (
        problems(root)
    )


def test_a_bad_facts_file_is_reported_with_its_own_path(tmp_path: Path) -> None:
    root = copy_specs(tmp_path)
    path = root / "models" / "openai" / "gpt-oss-20b.toml"
    path.write_text(path.read_text().replace("context = 131072", "context = -1\nwindow = 3"))
    found = problems(root)
    assert any(p.startswith(f"{path}: context:") for p in found), found
    assert any(p.startswith(f"{path}: (top level):") and "window" in p for p in found), found


def test_an_optional_key_needs_probe_liveness(tmp_path: Path) -> None:
    root = copy_specs(tmp_path)
    path = root / "providers" / "ollama.toml"
    path.write_text(path.read_text().replace('by = "probe"', 'by = "key"'))
    assert any(p.startswith(f"{path}: liveness.by:") for p in problems(root))
