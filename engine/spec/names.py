"""The expression and mapping-path pass of `engine check`: every name a spec reads or writes is a field.

It works on a file's TOML as read, not on the parsed spec, so a file that fails its JSON Schema still has its
expressions and paths checked in the same run: one run reports every problem of every kind. A provider's
rules are checked in its own file and a profile's in the profile's, each at its own index.

Fields (engine/spec/fields.py): `model.*` is a model row's, `error.*` an upstream error's, and `request.*`
(and mapping paths) any request of an operation the provider's models serve; for a profile, any operation.
Request-stage mappings see `/responses` bridged into a chat request; wire rules see the request as sent.
Wire-stage mappings work on the provider's own body, which has no schema here: their paths and `request.*`
are not checked. A field of the provider's own is declared in a block's `extensions`; the provider's (and
its profiles') other blocks and rules may then name it.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.rules import ExpressionError, compared, compile_expression, reads
from engine.spec.fields import EACH, Node, Step, model_tree, parse_steps, request_tree, show, suggestion, unknown_step
from engine.spec.models import FIELD_PATH, operation_row

REQUEST_NAMES = frozenset({"request", "model", "operation"})
ERROR_NAMES = frozenset({"status", "error", "provider"})
DEFAULT_OPERATIONS = ("chat.completions", "responses")  # a model row's default `operations`
_PATH = re.compile(FIELD_PATH)
# What an error rule's `when` reads as `error.<name>` (engine/error_rules.py builds it; docs/providers.md lists it).
ERROR_FIELDS = ("message", "type", "code", "param", "keys")
_ERROR = Node({name: Node() for name in ERROR_FIELDS}, is_object=True)
_DECLARE = "a field of the provider's own is declared in the mapping's `extensions`, with a `why`"


@dataclass(frozen=True)
class Scope:
    """What one file's expressions and mapping paths may name."""

    operations: tuple[str, ...]  # empty: any operation (a profile's)
    mapped: Node  # the request request-stage mappings see, extensions included
    sent: Node  # the request as the client sent it (wire rules), extensions included
    plain: Node  # `mapped` without extensions: what an extension must not already be

    @property
    def requests(self) -> str:
        return " or ".join(self.operations) + " request" if self.operations else "request of any operation"


def _model_served(name: str) -> bool:
    try:
        row = operation_row(name)
    except KeyError:
        return False
    return row.resolve == "model" and row.request is not None


@functools.cache
def _trees(operations: tuple[str, ...]) -> tuple[Node, Node]:
    rows = [operation_row(name) for name in operations]
    return request_tree(r.mapped or r.request for r in rows), request_tree(r.request for r in rows)


def scope_for(operations: Iterable[str] | None, extensions: Iterable[str]) -> Scope:
    """The scope of a provider whose rows serve `operations`, or of a profile (None: any operation)."""
    if operations is None:
        from engine.operations import OPERATIONS

        served, label = tuple(name for name in OPERATIONS if _model_served(name)), tuple[str, ...]()
    else:
        served = tuple(sorted({name for name in operations if _model_served(name)})) or DEFAULT_OPERATIONS
        label = served
    plain, sent = _trees(served)
    mapped = plain
    for extension in extensions:
        mapped, sent = mapped.graft(parse_steps(extension)), sent.graft(parse_steps(extension))
    return Scope(label, mapped, sent, plain)


def served_operations(data: dict[str, Any]) -> list[str]:
    """The operations a provider file's model rows serve (facts folded in), as far as they are well formed."""
    models = data.get("models")
    found: list[str] = []
    for row in models.values() if isinstance(models, dict) else ():
        operations = row.get("operations", DEFAULT_OPERATIONS) if isinstance(row, dict) else ()
        found += [name for name in operations if isinstance(name, str)] if isinstance(operations, list) else []
    return found or list(DEFAULT_OPERATIONS)


def _dicts(value: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(value, list):
        yield from ((i, item) for i, item in enumerate(value) if isinstance(item, dict))


def _strings(value: Any) -> Iterator[tuple[int, str]]:
    if isinstance(value, list):
        yield from ((i, item) for i, item in enumerate(value) if isinstance(item, str))


def declared_extensions(data: dict[str, Any] | None) -> list[str]:
    """The extensions a file's request-stage mappings declare."""
    if data is None:
        return []
    return [
        path
        for _, mapping in _dicts(data.get("mappings"))
        if mapping.get("stage", "request") == "request"
        for _, path in _strings(mapping.get("extensions"))
        if _PATH.match(path)
    ]


def problems(path: Path, data: dict[str, Any], scope: Scope) -> list[str]:
    """Every expression that does not compile or reads a name that is no field, and every mapping path that
    is no field, in one file's own mappings, wire rules and error rules."""
    found: list[str] = []
    for i, mapping in _dicts(data.get("mappings")):
        wire = mapping.get("stage") == "wire"
        trees = {"model": model_tree()} if wire else {"model": model_tree(), "request": scope.mapped}
        when = mapping.get("when")
        if isinstance(when, str) and when:
            found += _expression(f"{path}: mappings[{i}].when", when, REQUEST_NAMES, trees, scope)
        compute = mapping.get("compute")
        for field, source in compute.items() if isinstance(compute, dict) else ():
            if isinstance(source, str) and source:
                key = _key("mappings", i, "compute", field)
                found += _expression(f"{path}: {key}", source, REQUEST_NAMES, trees, scope)
        if wire:
            if mapping.get("extensions"):
                found.append(
                    f"{path}: mappings[{i}].extensions: a wire-stage block works on the provider's own body, whose"
                    " paths are not checked: it needs no extensions"
                )
            continue
        found += _extension_problems(path, i, mapping, scope)
        for key, field_path in _mapping_paths(i, mapping):
            found += _path_problem(f"{path}: {key}", field_path, scope)
    for i, rule in _dicts(data.get("wire_rules")):
        when = rule.get("when")
        if isinstance(when, str) and when:
            trees = {"model": model_tree(), "request": scope.sent}
            found += _expression(f"{path}: wire_rules[{i}].when", when, REQUEST_NAMES, trees, scope)
    for i, rule in _dicts(data.get("error_rules")):
        when = rule.get("when")
        if isinstance(when, str) and when:
            found += _expression(f"{path}: error_rules[{i}].when", when, ERROR_NAMES, {"error": _ERROR}, scope)
    return found


def format_key(path: Iterable[Any]) -> str:
    """`['models', 'openai/gpt-5', 'tools']` → `models."openai/gpt-5".tools` (TOML-ish, as a user reads it)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not text.replace("_", "").replace("-", "").isalnum():
                text = f'"{text}"'
            out += f".{text}" if out else text
    return out or "(top level)"


def _key(*parts: Any) -> str:
    return format_key(parts)


def _mapping_paths(i: int, mapping: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(key, path) for every path a mapping block names."""
    rename = mapping.get("rename")
    for old, new in rename.items() if isinstance(rename, dict) else ():
        yield _key("mappings", i, "rename", old), old
        if isinstance(new, str):
            yield _key("mappings", i, "rename", old), new
    for j, dropped in _strings(mapping.get("drop")):
        yield _key("mappings", i, "drop", j), dropped
    for step in ("default", "set", "clamp", "replace", "compute"):
        table = mapping.get(step)
        for field_path in table if isinstance(table, dict) else ():
            yield _key("mappings", i, step, field_path), field_path


def _path_problem(where: str, field_path: str, scope: Scope) -> list[str]:
    if not _PATH.match(field_path):
        return []  # the JSON Schema pass reports it
    steps = parse_steps(field_path)
    missing = unknown_step(scope.mapped, steps)
    if missing is None:
        return []
    index, known = missing
    hint = suggestion(steps, index, known)
    return [f"{where}: {field_path} is not a field of the {scope.requests}{hint}; {_DECLARE}"]


def _extension_problems(path: Path, i: int, mapping: dict[str, Any], scope: Scope) -> list[str]:
    named = [p for _, p in _mapping_paths(i, mapping)]
    found = []
    for j, extension in _strings(mapping.get("extensions")):
        if not _PATH.match(extension):
            continue
        where = f"{path}: {_key('mappings', i, 'extensions', j)}"
        if unknown_step(scope.plain, parse_steps(extension)) is None:
            found.append(f"{where}: {extension} is a field of the {scope.requests} already, not an extension")
        elif not any(_on_one_line(extension, p) for p in named):
            found.append(f"{where}: {extension} is not a path this block renames, drops or sets; declare it there")
    return found


def _on_one_line(a: str, b: str) -> bool:
    """Whether one path is the other or lies under it (`output_config` and `output_config.effort`)."""
    return a == b or b.startswith(a + ".") or a.startswith(b + ".") or b.startswith(a + "[]") or a.startswith(b + "[]")


def _expression(where: str, source: str, allowed: frozenset[str], trees: dict[str, Node], scope: Scope) -> list[str]:
    try:
        compile_expression(source, allowed)
    except ExpressionError as exc:
        return [f"{where}: {exc}"]
    found: list[str] = []
    for name, raw in reads(source):
        tree = trees.get(name)
        if tree is None:
            continue
        steps: list[Step] = [("key", name), *(EACH if s is None else ("key", s) for s in raw)]
        missing = unknown_step(Node({name: tree}, is_object=True), steps)
        if missing is None:
            continue
        index, known = missing
        read, hint = show(steps[: index + 1]), suggestion(steps, index, known)
        if name == "request":
            problem = f"reads {read}, which no {scope.requests} has{hint}; {_DECLARE}"
        elif name == "model":
            problem = f"reads {read}, which a model row does not have{hint}"
        else:
            problem = f"reads {read}, which an upstream error does not have{hint}; it has {', '.join(known)}"
        if f"{where}: {problem}" not in found:
            found.append(f"{where}: {problem}")
    if "operation" in allowed:
        found += _operation_problems(where, source)
    return found


def _operation_problems(where: str, source: str) -> list[str]:
    """`operation == 'responsez'` never holds: the names compared with `operation` must be operations."""
    from engine.operations import OPERATIONS

    found = []
    for value in dict.fromkeys(compared(source, "operation")):
        if value not in OPERATIONS:
            close = difflib.get_close_matches(value, list(OPERATIONS), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; operations: {', '.join(OPERATIONS)}"
            found.append(f"{where}: compares operation with {value!r}, which is no operation{hint}")
    return found


def template_problems(where: str, source: str) -> list[str]:
    """The `model.*` reads of a URL template (it compiles) that are no field of a model row."""
    found = []
    for name, raw in reads(source, template=True):
        if name != "model":
            continue
        steps: list[Step] = [("key", name), *(EACH if s is None else ("key", s) for s in raw)]
        missing = unknown_step(Node({name: model_tree()}, is_object=True), steps)
        if missing is not None:
            index, known = missing
            read, hint = show(steps[: index + 1]), suggestion(steps, index, known)
            found.append(f"{where}: reads {read}, which a model row does not have{hint}")
    return found
