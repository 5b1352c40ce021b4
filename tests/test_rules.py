"""Spec expressions: sandboxed, forgiving about missing fields, and specialized ahead of time."""

from __future__ import annotations

import itertools

import pytest

from engine.rules import ExpressionError, compile_expression

NAMES = frozenset({"request", "model", "operation"})
WIRE_RULE = (
    "request.tools and model.reasoning and request.reasoning_effort != 'none' "
    "and (request.reasoning_effort or model.reasons_by_default)"
)


def test_missing_fields_are_falsy_and_chain() -> None:
    assert compile_expression("request.stream_options.include_usage", NAMES)(request={}) is None
    assert compile_expression("request.tools and true", NAMES).holds(request={}) is False


def test_the_sandbox_refuses_to_reach_into_python() -> None:
    escape = compile_expression("request.__class__.__mro__", NAMES)
    assert escape(request={}) is None
    with pytest.raises(Exception, match=r"unsafe|immutable|not safely"):
        compile_expression("request.update({'a': 1})", NAMES)(request={})


def test_unknown_names_and_syntax_errors_fail_at_load() -> None:
    with pytest.raises(ExpressionError, match="reqest"):
        compile_expression("reqest.tools", NAMES)
    with pytest.raises(ExpressionError, match="does not compile"):
        compile_expression("request.tools and", NAMES)


def test_specializing_on_the_model_decides_or_simplifies() -> None:
    rule = compile_expression(WIRE_RULE, NAMES)
    assert rule.specialize(model={"reasoning": False}, operation="chat.completions") is False
    residual = rule.specialize(model={"reasoning": True, "reasons_by_default": True}, operation="chat.completions")
    assert residual is not True and residual is not False and residual.names == {"request"}
    assert compile_expression("operation == 'responses'", NAMES).specialize(operation="responses") is True


@pytest.mark.parametrize(
    "model", [{"reasoning": r, "reasons_by_default": d} for r, d in itertools.product([True, False], repeat=2)]
)
def test_a_specialized_condition_agrees_with_the_original_on_every_request(model: dict[str, bool]) -> None:
    rule = compile_expression(WIRE_RULE, NAMES)
    specialized = rule.specialize(model=model, operation="chat.completions")
    for tools, effort in itertools.product([None, [{"type": "function"}]], [None, "none", "low", "high"]):
        request = {k: v for k, v in {"tools": tools, "reasoning_effort": effort}.items() if v is not None}
        expected = rule.holds(request=request, model=model, operation="chat.completions")
        got = (
            specialized
            if isinstance(specialized, bool)
            else specialized.holds(request=request, model=model, operation="chat.completions")
        )
        assert got == expected, (request, model)
