"""JSON Schema rewriting per provider (engine/schemas.py, a spec's `[schemas]`), with Gemini's rules as the
example: every keyword Gemini's documented subset lacks is removed, references are inlined, and schemas
that cannot be expressed are refused with a 400 that names them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from engine.errors import GatewayError
from engine.schemas import rewrite, rewrite_request
from engine.spec.loader import load_specs
from tests.conftest import SPECS

GEMINI = next(f.spec for f in load_specs(SPECS).providers if f.spec.provider.id == "gemini")
RULES = GEMINI.schemas
assert RULES is not None


def gemini(schema: dict[str, Any]) -> dict[str, Any]:
    assert RULES is not None
    return rewrite(schema, RULES)


REJECTED = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.com/s",
    "$comment": "internal",
    "const": None,  # rewritten, not dropped: tested below
    "default": "x",
    "examples": ["x"],
    "pattern": "^a",
    "minLength": 1,
    "maxLength": 9,
    "exclusiveMinimum": 0,
    "exclusiveMaximum": 10,
    "multipleOf": 2,
    "uniqueItems": True,
    "not": {"type": "null"},
    "patternProperties": {"^x": {"type": "string"}},
    "propertyNames": {"pattern": "^a"},
    "if": {"type": "string"},
    "then": {"minLength": 1},
    "else": {"type": "null"},
    "dependentRequired": {"a": ["b"]},
    "contentEncoding": "base64",
    "deprecated": True,
    "readOnly": True,
}


@pytest.mark.parametrize("keyword", sorted(k for k in REJECTED if k != "const"))
def test_each_keyword_outside_geminis_subset_is_removed(keyword: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", keyword: REJECTED[keyword]}}}
    assert gemini(schema) == {"type": "object", "properties": {"a": {"type": "string"}}}
    assert gemini({"type": "string", keyword: REJECTED[keyword]}) == {"type": "string"}


def test_kept_keywords_and_property_names_that_look_like_keywords_survive() -> None:
    schema = {
        "type": "object",
        "title": "T",
        "description": "d",
        "properties": {
            "pattern": {"type": "string", "enum": ["a", "b"], "format": "date-time"},
            "items": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 1},
            "either": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["pattern"],
        "additionalProperties": False,
        "propertyOrdering": ["pattern", "items", "either"],
    }
    assert gemini(schema) == schema


def test_local_refs_are_inlined_and_defs_removed() -> None:
    schema = {
        "$defs": {"City": {"type": "string", "description": "A city"}},
        "type": "object",
        "properties": {"from": {"$ref": "#/$defs/City"}, "to": {"$ref": "#/$defs/City", "description": "Dest"}},
    }
    assert gemini(schema) == {
        "type": "object",
        "properties": {
            "from": {"type": "string", "description": "A city"},
            "to": {"type": "string", "description": "Dest"},
        },
    }


def test_all_of_is_merged_and_const_becomes_enum() -> None:
    schema = {
        "allOf": [
            {"type": "object", "properties": {"a": {"const": "x"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
        ]
    }
    assert gemini(schema) == {
        "type": "object",
        "properties": {"a": {"enum": ["x"]}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }


def test_required_names_without_a_property_are_dropped() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "ghost"]}
    assert gemini(schema)["required"] == ["a"]


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"$defs": {"N": {"properties": {"next": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"}, "recursive"),
        ({"properties": {"a": {"$ref": "https://example.com/a.json"}}}, "outside the schema"),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "points to nothing"),
        ({"properties": {"a": {}}, "required": [{"a": 1}]}, "property names"),  # found by tests/hardening/fuzz.py
        ({"allOf": [{"required": ["a"]}, {"required": [["b"]]}]}, "property names"),
    ],
    ids=["recursive", "remote", "dangling", "required-not-names", "all-of-required-not-names"],
)
def test_schemas_that_cannot_be_expressed_are_refused_with_the_param(schema: dict[str, Any], reason: str) -> None:
    assert RULES is not None
    body = {"tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]}
    with pytest.raises(GatewayError) as caught:
        rewrite_request(body, RULES, "chat")
    assert caught.value.status == 400
    assert caught.value.param == "tools[0].function.parameters"
    assert caught.value.code == "invalid_schema"
    assert reason in caught.value.message


def test_rewriting_a_request_leaves_the_clients_request_alone() -> None:
    assert RULES is not None
    body = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "$schema": "x"}}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"const": 1}}},
    }
    original = copy.deepcopy(body)
    lowered = dict(body)
    rewrite_request(lowered, RULES, "chat")
    assert body == original
    assert lowered["tools"][0]["function"]["parameters"] == {"type": "object"}
    assert lowered["response_format"]["json_schema"]["schema"] == {"enum": [1]}


def test_responses_shaped_requests_are_rewritten_too() -> None:
    assert RULES is not None
    body = {
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "$schema": "x"}}],
        "text": {"format": {"type": "json_schema", "name": "r", "schema": {"type": "string", "pattern": "a"}}},
    }
    rewrite_request(body, RULES, "responses")
    assert body["tools"][0]["parameters"] == {"type": "object"}
    assert body["text"]["format"]["schema"] == {"type": "string"}
