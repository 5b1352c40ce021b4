"""Rewrite the JSON Schemas inside a request into the subset a provider accepts (its spec's `[schemas]`).

Clients send full JSON Schema for tool parameters and structured output: pydantic's `$defs`/`$ref`,
`allOf` wrappers, `const`, `$schema`, format and length constraints. Some providers refuse a whole request
over one keyword they do not know (Gemini answers 400 `INVALID_ARGUMENT`). This step runs in
`engine.lower` before any codec, for every provider whose spec has `[schemas]`, so the rule is data and a
new codec gets it for free. A schema that cannot be expressed (a recursive `$ref`, a `$ref` to another
document) is refused with a 400 that names the schema, instead of being sent and failing upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.errors import GatewayError
from engine.spec.models import SchemaRules

# Keywords whose value is a map of name → schema, a schema, or a list of schemas (JSON Schema 2020-12).
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_VALUES = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
)
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAX_DEPTH = 64


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _schemas_in_chat(body: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(holder, key, param) for each schema in a chat request."""
    for i, tool in enumerate(body.get("tools") or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("parameters"), dict):
            yield function, "parameters", f"tools[{i}].function.parameters"
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and isinstance(response_format.get("json_schema"), dict):
        holder = response_format["json_schema"]
        if isinstance(holder.get("schema"), dict):
            yield holder, "schema", "response_format.json_schema.schema"


def _schemas_in_responses(body: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, str]]:
    for i, tool in enumerate(body.get("tools") or ()):
        if isinstance(tool, dict) and isinstance(tool.get("parameters"), dict):
            yield tool, "parameters", f"tools[{i}].parameters"
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        yield fmt, "schema", "text.format.schema"


def rewrite_request(body: dict[str, Any], rules: SchemaRules, shape: str) -> None:
    """Rewrite every schema in `body` (a chat or Responses request) in place. The containers on the way are
    copied first, so the client's decoded request is never altered."""
    places = _schemas_in_chat if shape == "chat" else _schemas_in_responses
    if not any(True for _ in places(body)):
        return
    for key in ("tools", "response_format", "text"):
        if key in body:
            body[key] = _copy_containers(body[key])
    for holder, key, param in places(body):
        try:
            holder[key] = rewrite(holder[key], rules)
        except _Refused as refused:
            raise GatewayError(
                400,
                f"The JSON Schema at `{param}` cannot be sent to this model: {refused.reason}.",
                param=param,
                code="invalid_schema",
            ) from None


def _copy_containers(value: Any) -> Any:
    """A copy of the dicts and lists down to (not into) the schemas, which `rewrite` copies itself."""
    if isinstance(value, list):
        return [_copy_containers(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy_containers(v) if k not in ("parameters", "schema") else v for k, v in value.items()}
    return value


def rewrite(schema: dict[str, Any], rules: SchemaRules) -> dict[str, Any]:
    """A new schema within `rules`; `schema` is not modified."""
    root = schema
    if rules.inline_refs:
        schema = _inline(schema, root, (), 0)
    pruned: dict[str, Any] = _prune(schema, rules, frozenset(rules.keep), 0)
    return pruned


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    if not ref.startswith("#"):
        raise _Refused(f"`$ref` {ref!r} points outside the schema; only local references (`#/...`) can be inlined")
    node: Any = root
    for token in ref[1:].lstrip("/").split("/") if ref not in ("#", "#/") else ():
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise _Refused(f"`$ref` {ref!r} points to nothing in the schema")
    return node


def _inline(node: Any, root: dict[str, Any], seen: tuple[str, ...], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise _Refused(f"it nests deeper than {_MAX_DEPTH} levels")
    if isinstance(node, list):
        return [_inline(v, root, seen, depth + 1) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            raise _Refused(f"`$ref` {ref!r} is recursive, and this provider takes no references")
        target = _inline(_resolve(ref, root), root, (*seen, ref), depth + 1)
        siblings = {k: _inline(v, root, seen, depth + 1) for k, v in node.items() if k != "$ref"}
        return {**target, **siblings} if isinstance(target, dict) else target
    return {k: _inline(v, root, seen, depth + 1) for k, v in node.items() if k not in ("$defs", "definitions")}


def _merge_all_of(node: dict[str, Any]) -> dict[str, Any]:
    parts = node.get("allOf")
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        return node
    merged = {k: v for k, v in node.items() if k != "allOf"}
    for part in parts:
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**value, **(merged.get("properties") or {})}
            elif key == "required" and isinstance(value, list):
                merged["required"] = list(dict.fromkeys([*_names(merged.get("required") or []), *_names(value)]))
            else:
                merged.setdefault(key, value)
    return merged


def _prune(node: Any, rules: SchemaRules, keep: frozenset[str], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise _Refused(f"it nests deeper than {_MAX_DEPTH} levels")
    if not isinstance(node, dict):
        return node
    if rules.merge_all_of and "allOf" in node:
        node = _merge_all_of(node)
    if rules.const_to_enum and "const" in node:
        node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in keep:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _prune(sub, rules, keep, depth + 1) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_prune(sub, rules, keep, depth + 1) for sub in value]
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            out[key] = _prune(value, rules, keep, depth + 1)
        elif key == "items" and isinstance(value, list):  # draft-04 tuple form
            out[key] = [_prune(sub, rules, keep, depth + 1) for sub in value]
        else:
            out[key] = value
    if "required" in out and isinstance(out.get("properties"), dict) and isinstance(out["required"], list):
        out["required"] = [name for name in _names(out["required"]) if name in out["properties"]]
    return out


def _names(required: list[Any]) -> list[str]:
    if not all(isinstance(name, str) for name in required):
        raise _Refused("`required` must list property names (strings)")
    return required
