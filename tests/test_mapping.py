"""Field mappings, the vocabulary a provider spec uses to adapt a request without Python."""

from __future__ import annotations

import copy
from typing import Any

from engine.mapping import CompiledMapping
from engine.spec.models import Mapping

MODEL = {"id": "acme/one", "reasoning": True, "reasons_by_default": False}


def mapped(request: dict[str, Any], **block: Any) -> dict[str, Any]:
    body = copy.deepcopy(request)
    original = copy.deepcopy(request)
    mapping = CompiledMapping.compile(Mapping(**block))
    mapping.apply(body, {"request": body, "model": MODEL, "operation": "chat.completions"})
    assert request == original, "a mapping never mutates the request it was given"
    return body


def test_rename_moves_a_field_and_never_overwrites_the_target() -> None:
    assert mapped({"max_tokens": 5}, rename={"max_tokens": "max_completion_tokens"}) == {"max_completion_tokens": 5}
    both = {"max_tokens": 5, "max_completion_tokens": 9}
    assert mapped(both, rename={"max_tokens": "max_completion_tokens"}) == {"max_completion_tokens": 9}
    assert mapped({"seed": 1}, rename={"seed": "options.random_seed"}) == {"options": {"random_seed": 1}}


def test_drop_removes_fields_also_inside_every_list_element() -> None:
    request = {"temperature": 1, "messages": [{"role": "user", "name": "a", "content": "x"}, {"role": "tool"}]}
    assert mapped(request, drop=["temperature", "messages[].name"]) == {
        "messages": [{"role": "user", "content": "x"}, {"role": "tool"}]
    }
    assert mapped({"a": 1}, drop=["stream_options.include_usage"]) == {"a": 1}


def test_containers_are_copied_only_where_a_mapping_changes_them() -> None:
    """What lower_request does: mappings run on a shallow copy of the client's decoded request. Its nested
    messages must stay as the client sent them, and those a mapping leaves alone are not copied at all."""
    request = {"messages": [{"role": "user", "content": "x", "name": "a"}, {"role": "tool", "content": "y"}]}
    original = copy.deepcopy(request)
    body = dict(request)
    mapping = CompiledMapping.compile(Mapping(drop=["messages[].name", "messages[].reasoning_content"]))
    mapping.apply(body, {"request": body, "model": MODEL, "operation": "chat.completions"})
    assert request == original, "the client's request is not altered"
    assert body["messages"] == [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]
    assert body["messages"][1] is request["messages"][1], "an untouched message is shared, not copied"
    untouched = dict(request)
    CompiledMapping.compile(Mapping(drop=["messages[].reasoning_content"])).apply(untouched, {"request": untouched})
    assert untouched["messages"] is request["messages"], "nothing to drop: no copy of the list either"


def test_default_only_fills_what_is_absent_and_set_always_wins() -> None:
    assert mapped({"n": 2}, default={"n": 1, "store": False}) == {"n": 2, "store": False}
    assert mapped({"store": True}, set={"store": False}) == {"store": False}
    assert mapped({}, set={"stream_options.include_usage": True}) == {"stream_options": {"include_usage": True}}


def test_clamp_bounds_numbers_and_leaves_other_values_alone() -> None:
    assert mapped({"temperature": 1.8}, clamp={"temperature": {"max": 1.0}}) == {"temperature": 1.0}
    assert mapped({"max_tokens": 3}, clamp={"max_tokens": {"min": 16}}) == {"max_tokens": 16}
    assert mapped({"temperature": "hot"}, clamp={"temperature": {"max": 1}}) == {"temperature": "hot"}


def test_replace_translates_values_by_table() -> None:
    request = {"messages": [{"role": "developer", "content": "a"}, {"role": "user", "content": "b"}]}
    assert mapped(request, replace={"messages[].role": {"developer": "system"}})["messages"] == [
        {"role": "system", "content": "a"},
        {"role": "user", "content": "b"},
    ]


def test_compute_sets_a_field_from_an_expression_and_removes_it_on_null() -> None:
    block = {"compute": {"max_tokens": "[request.max_tokens or 0, 4096] | min if request.max_tokens else none"}}
    assert mapped({"max_tokens": 9000}, **block) == {"max_tokens": 4096}
    assert mapped({"temperature": 1}, **block) == {"temperature": 1}


def test_when_decides_whether_a_block_applies() -> None:
    block = {"when": "request.reasoning_effort != 'none'", "drop": ["temperature"]}
    assert mapped({"temperature": 0.2}, **block) == {}
    assert mapped({"temperature": 0.2, "reasoning_effort": "none"}, **block) == {
        "temperature": 0.2,
        "reasoning_effort": "none",
    }


def test_conditions_are_specialized_for_each_model_at_start_up() -> None:
    on_model = CompiledMapping.compile(Mapping(when="model.reasoning", drop=["temperature"]))
    always = on_model.specialized(model=MODEL)
    assert always is not None and always.when is None
    assert on_model.specialized(model={**MODEL, "reasoning": False}) is None
    mixed = CompiledMapping.compile(Mapping(when="model.reasoning and request.tools", drop=["temperature"]))
    residual = mixed.specialized(model=MODEL)
    assert residual is not None and residual.when is not None and residual.when.names == {"request"}
