"""`engine catalog import`: refresh catalog rows from models.dev-shaped data, as a diff of our TOML.

models.dev keeps one TOML file per thing: `providers/<provider>/models/<model id>.toml` (a model as one
provider serves it: limits, modalities, capability flags, `[cost]`), optionally inheriting the
provider-agnostic `models/<maker>/<model>.toml` through `base_model`. This module reads such a directory
(a checkout of the models.dev repository, or any tree in its layout) with `tomllib` and rewrites the
values our specs hold of it, with `tomlkit`, so comments, ordering and every hand-written key (mappings,
quirks, `why`s, `structured_output = false` where a codec lacks it) stay as they are. The result is a
diff of TOML to review; no code is involved.

What is refreshed, and where it is written:
- each provider row, from `<provider.models_dev or provider.id>/<row.upstream>` (or the row's own
  `models_dev`): `context`, `max_output`, `modalities`, `tools`, `reasoning` and the token prices
  (`input`, `output`, `cached_input`, `cache_write`);
- each facts file (specs/models/) that names its `models_dev` entry, the same fields.
A value a row inherits from a facts file that the import would change for this provider only is written
into the row, as an override. Rows whose entry models.dev lacks are listed and left alone.
"""

from __future__ import annotations

import difflib
import shutil
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Table

from engine.spec.loader import SpecError, load_specs

# Our key → how it is read from a resolved models.dev entry.
_PRICES = {"input": "input", "output": "output", "cached_input": "cache_read", "cache_write": "cache_write"}
_MODALITIES = ("text", "image", "audio", "video", "pdf")  # what spec.models.Modality accepts
_DEFAULTS: dict[str, Any] = {"tools": False, "reasoning": False, "modalities": {"input": ["text"], "output": ["text"]}}


@dataclass
class Report:
    """What an import found: the new text of each changed file, and the rows it could not refresh."""

    root: Path  # the specs directory
    changed: dict[Path, tuple[str, str]] = field(default_factory=dict)  # path → (old text, new text)
    missing: list[str] = field(default_factory=list)  # "<file>: <row>: no models.dev entry <where>"

    def diff(self) -> str:
        base = self.root.parent
        chunks: list[str] = []
        for path, (old, new) in sorted(self.changed.items()):
            name = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
            chunks += difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{name}", f"b/{name}"
            )
        return "".join(chunks)


def load_entry(data: Path, where: str) -> dict[str, Any] | None:
    """`<provider>/<model id>` from a models.dev tree, or None. With `base_model`, the provider-agnostic
    `models/<base>.toml` is merged under it as models.dev's generator does (tables deep-merged, the
    provider's values winning), then `base_model_omit`'s dot paths are removed."""
    provider, _, model = where.partition("/")
    path = data / "providers" / provider / "models" / f"{model}.toml"
    if not model or not path.is_file():
        return None
    entry = tomllib.loads(path.read_text())
    base_name = entry.pop("base_model", None)
    omit = entry.pop("base_model_omit", None)
    if not isinstance(base_name, str):
        return entry
    base_path = data / "models" / f"{base_name}.toml"
    base = tomllib.loads(base_path.read_text()) if base_path.is_file() else {}
    for unshared in ("benchmarks", "license", "links", "weights"):
        base.pop(unshared, None)
    merged = _deep_merge(base, entry)
    for dotted in omit if isinstance(omit, list) else ():
        *parents, leaf = str(dotted).split(".")
        node: Any = merged
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return merged


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = _deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def facts_of(entry: dict[str, Any]) -> dict[str, Any]:
    """A resolved models.dev entry in our keys; only what it states."""
    out: dict[str, Any] = {}
    found = entry.get("limit")
    limit: dict[str, Any] = found if isinstance(found, dict) else {}
    if isinstance(limit.get("context"), int) and limit["context"] > 0:
        out["context"] = limit["context"]
    if isinstance(limit.get("output"), int) and limit["output"] > 0:
        out["max_output"] = limit["output"]
    modalities = entry.get("modalities")
    if isinstance(modalities, dict):
        out["modalities"] = {
            side: [m for m in modalities.get(side) or () if m in _MODALITIES] or ["text"]
            for side in ("input", "output")
        }
    if isinstance(entry.get("tool_call"), bool):
        out["tools"] = entry["tool_call"]
    if isinstance(entry.get("reasoning"), bool):
        out["reasoning"] = entry["reasoning"]
    cost = entry.get("cost")
    if isinstance(cost, dict):
        prices = {ours: float(cost[theirs]) for ours, theirs in _PRICES.items() if _number(cost.get(theirs))}
        # A zero price states nothing we can use: a prompt cache not offered is not a free one, and a free
        # entry (a local server, a preview) is no price list.
        prices = {k: v for k, v in prices.items() if v}
        if prices:
            out["price"] = prices
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    """A tomlkit value as plain Python, for comparing."""
    return value.unwrap() if hasattr(value, "unwrap") else value


def _same(ours: Any, theirs: Any) -> bool:
    """Whether our value already says what theirs does (a table: every key theirs states)."""
    ours = _plain(ours)
    if isinstance(theirs, dict):
        return isinstance(ours, dict) and all(_same(ours.get(k), v) for k, v in theirs.items())
    if _number(ours) and _number(theirs):
        return abs(float(ours) - float(theirs)) < 1e-9
    return bool(ours == theirs)


def _text(value: Any) -> str:
    """A value as our specs write it: inline tables padded, prices with at least two decimals."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_text(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.2f}" if round(value, 2) == value else repr(value)
    return str(tomlkit.item(value).as_string())


def _item(text: str) -> Any:
    return tomlkit.parse(f"x = {text}\n")["x"]


class _Target:
    """One TOML table we write to (a provider row, or a facts file), and for a row the facts it reads."""

    def __init__(self, table: Any, inherited: dict[str, Any] | None) -> None:
        self.table = table
        self.inherited = inherited or {}

    def refresh(self, facts: dict[str, Any]) -> bool:
        changed = False
        for key, theirs in facts.items():
            if key in self.table:
                if not _same(self.table[key], theirs):
                    self._replace(key, theirs)
                    changed = True
            elif key in self.inherited:
                if not _same(self.inherited[key], theirs):  # differs for this host only: the row overrides it
                    inherited = _plain(self.inherited[key])
                    self._add(key, {**inherited, **theirs} if isinstance(inherited, dict) else theirs)
                    changed = True
            elif not _same(_DEFAULTS.get(key), theirs):
                self._add(key, theirs)
                changed = True
        return changed

    def _replace(self, key: str, theirs: Any) -> None:
        """A changed value, written where the old one was; a table keeps its other keys and its order, and
        unchanged values keep their text; the line keeps its comment."""
        old = self.table[key]
        if isinstance(theirs, dict) and isinstance(old, dict):
            parts = {k: v.as_string().strip() for k, v in old.items()}
            parts |= {k: _text(v) for k, v in theirs.items() if k not in old or not _same(old[k], v)}
            new = _item("{ " + ", ".join(f"{k} = {v}" for k, v in parts.items()) + " }")
        else:
            new = _item(_text(theirs))
        for name in ("indent", "comment_ws", "comment", "trail"):
            setattr(new.trivia, name, getattr(old.trivia, name))
        self.table[key] = new

    def _add(self, key: str, value: Any) -> None:
        """A new key, after the table's last key (a comment before the next table stays with that table)."""
        container = self.table.value if isinstance(self.table, Table) else self.table
        keys = [k for k, v in container.body if k is not None and not isinstance(v, Table | AoT)]
        if keys:
            container._insert_after(keys[-1].key, key, _item(_text(value)))
        else:
            self.table[key] = _item(_text(value))


def refresh(specs: Path, data: Path, providers: Iterable[str] = ()) -> Report:
    """Compute the refreshed text of every spec file the models.dev tree `data` changes; write nothing."""
    report = Report(specs)
    only = set(providers)
    facts_docs: dict[str, tuple[Path, Any]] = {}
    for path in sorted((specs / "models").glob("*/*.toml")):
        facts_docs[f"{path.parent.name}/{path.stem}"] = (path, tomlkit.parse(path.read_text()))

    for path, doc in facts_docs.values():
        where = doc.get("models_dev")
        if not isinstance(where, str) or only:
            continue
        entry = load_entry(data, where)
        if entry is None:
            report.missing.append(f"{path.relative_to(specs)}: no models.dev entry {where}")
        elif _Target(doc, None).refresh(facts_of(entry)):
            report.changed[path] = (path.read_text(), tomlkit.dumps(doc))

    for path in sorted((specs / "providers").glob("*.toml")):
        doc = tomlkit.parse(path.read_text())
        info = doc.get("provider") or {}
        if only and info.get("id") not in only:
            continue
        source = str(info.get("models_dev") or info.get("id") or path.stem)
        if not (data / "providers" / source).is_dir():
            report.missing.append(f"{path.relative_to(specs)}: no providers/{source}/ in this data")
            continue
        changed = False
        for public_id, row in (doc.get("models") or {}).items():
            where = row.get("models_dev") or f"{source}/{row.get('upstream')}"
            entry = load_entry(data, str(where))
            if entry is None:
                report.missing.append(f"{path.relative_to(specs)}: {public_id}: no models.dev entry {where}")
                continue
            shared = facts_docs.get(str(row.get("facts")))
            serves = row.get("operations") or (shared[1].get("operations") if shared else None) or ["chat.completions"]
            inherited = dict(_plain(shared[1])) if shared is not None else None
            if shared is not None and _plain(shared[1]).get("models_dev") == where:
                inherited = None  # the facts file is refreshed from this very entry, above
                new = {k: v for k, v in facts_of(entry).items() if k in row}
            else:
                new = facts_of(entry)
            if not {"chat.completions", "responses"} & set(serves):
                new.pop("max_output", None)  # models.dev's output limit of an embedding model is its dimensions
            changed |= _Target(row, inherited).refresh(new)
        if changed:
            report.changed[path] = (path.read_text(), tomlkit.dumps(doc))
    return report


def validate(report: Report) -> list[str]:
    """The problems `engine check` would report with the refreshed files in place (none: safe to write)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "specs"
        shutil.copytree(report.root, copy)
        for path, (_old, new) in report.changed.items():
            (copy / path.relative_to(report.root)).write_text(new)
        try:
            load_specs(copy)
        except SpecError as exc:
            return [problem.replace(str(copy), str(report.root)) for problem in exc.problems]
    return []


def write(report: Report) -> Iterator[Path]:
    for path, (_old, new) in sorted(report.changed.items()):
        path.write_text(new)
        yield path
