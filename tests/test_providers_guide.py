"""docs/providers.md's promise: section 3 names every name a spec expression may read, so a newcomer never
has to read engine/ to write a `when`. A new model-row key or error field fails here until it is listed."""

from __future__ import annotations

import re
from pathlib import Path

from engine.error_rules import CompiledErrorRule
from engine.spec.loader import ERROR_NAMES, REQUEST_NAMES, TEMPLATE_NAMES
from engine.spec.models import ErrorRule, ModelRow
from engine.spec.names import ERROR_FIELDS
from engine.wires.base import UpstreamError

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "providers.md"


def expressions_section() -> str:
    text = GUIDE.read_text()
    start = text.index("## 3. Expressions")
    return text[start : text.index("\n## ", start + 1)]


def test_every_top_level_name_is_in_the_table() -> None:
    table_names = {
        n
        for row in re.findall(r"(?m)^\| [^|]+ \| ([^|]+) \|", expressions_section())
        for n in re.findall(r"`(\w+)`", row)
    }
    assert (REQUEST_NAMES | ERROR_NAMES | TEMPLATE_NAMES) - table_names == set()


def test_every_model_row_key_and_error_field_is_listed() -> None:
    section = expressions_section()
    listed = set(re.findall(r"`((?:model|error)\.\w+)`", section))
    model_keys = {f"model.{name}" for name in [*ModelRow.model_fields, "id", "provider"]}  # id, provider: the view's
    assert model_keys - listed == set()
    assert {f"error.{name}" for name in ERROR_FIELDS} - listed == set()


def test_error_keys_is_what_the_guide_says() -> None:
    """`error.keys` holds every key name of the body, lower-cased without `_` and `-`."""
    rule = CompiledErrorRule.compile(ErrorRule(name="filtered", when="'innererror' in error.keys", status=400))
    assert rule.holds(400, UpstreamError(message="", keys=("error", "innererror")), "azure")
    assert not rule.holds(400, UpstreamError(message="", keys=("error",)), "azure")
