"""bench/loc.py, the line table of issue 10: one row per provider spec, counted by the rules it states."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def load_loc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_loc", REPO / "bench" / "loc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_toml_counts_data_and_comments_apart(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('#:schema ../schema/provider.schema.json\n# Sources: docs\n\n[provider]\nid = "x"  # inline\n')
    assert load_loc().toml_lines(path) == (2, 1)


def test_python_counts_code_without_docstrings_or_comments(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        '"""Module doc,\nover two lines."""\n\n# a comment\ndef f() -> str:\n    """Doc."""\n    return "x"\n'
    )
    assert load_loc().python_lines(path) == 2


def test_every_provider_spec_has_a_row_with_its_codec() -> None:
    table = load_loc().report(REPO / "specs").split("\n\n")[0].splitlines()[2:]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table}
    specs = sorted((REPO / "specs" / "providers").glob("*.toml"))
    assert sorted(rows) == sorted(tomllib.loads(p.read_text())["provider"]["id"] for p in specs)
    assert "(anthropic_messages)" in rows["anthropic"]
    assert "openai_chat, openai_responses" in rows["openai"], "a profile's wire rules count for its providers"
