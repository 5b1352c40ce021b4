"""Conditions and computed values written in specs, compiled once at load time.

Specs speak a small expression language: Jinja2 expressions evaluated in an immutable sandbox, so a spec
can read the request but never mutate it, call arbitrary Python or reach the filesystem. Missing keys are
falsy and chain (`request.stream_options.include_usage` is simply false when absent), which keeps
conditions short. Compiling happens at load, so a syntax error fails `engine check`, never a request.

Conditions are also *specialized*: at start-up the engine knows each candidate's `model` row and the
finite set of operations, so `specialize` folds those names into constants and simplifies `and`, `or`,
`not`, comparisons and `if`/`else`. A condition that becomes constant costs nothing per request; one
that still reads the request is recompiled without the decided parts. A sandboxed evaluation costs
~15 µs, so this keeps conditions off the hot path wherever the data allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, meta, nodes
from jinja2.compiler import has_safe_repr
from jinja2.environment import TemplateExpression
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

_ENV = ImmutableSandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)


class ExpressionError(ValueError):
    """A spec expression does not compile."""


@dataclass(frozen=True)
class Expression:
    """A compiled spec expression; call it with the names it may read."""

    source: str
    names: frozenset[str] = field(compare=False)
    _fn: Callable[..., Any] = field(repr=False, compare=False)
    _ast: nodes.Expr = field(repr=False, compare=False)

    def __call__(self, **names: Any) -> Any:
        return self._fn(**names)

    def holds(self, **names: Any) -> bool:
        return bool(self._fn(**names))

    def specialize(self, **known: Any) -> bool | Expression:
        """This condition with `known` names fixed: True or False when that decides it, else the residual
        condition over the names still unknown. Only for conditions: folding keeps truthiness, not values."""
        folded = _fold(self._ast, known)
        if isinstance(folded, nodes.Const):
            return bool(folded.value)
        return _compile_ast(f"{self.source}  [specialized]", folded)


def _parse(source: str) -> nodes.Expr:
    parser = Parser(_ENV, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("unexpected text after the expression", parser.stream.current.lineno, None, None)
    expr.set_environment(_ENV)
    return expr


def _compile_ast(source: str, expr: nodes.Expr) -> Expression:
    expr.set_lineno(1)
    expr.set_environment(_ENV)
    body = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
    template = _ENV.from_string(nodes.Template(body, lineno=1))
    outline = nodes.Template([nodes.Output([expr])])
    outline.set_environment(_ENV)
    names = frozenset(meta.find_undeclared_variables(outline))
    return Expression(source, names, TemplateExpression(template, True), expr)


def compile_expression(source: str, allowed: frozenset[str] | None = None) -> Expression:
    """Compile `source`; with `allowed`, reading any other name is an error (a typo, usually)."""
    try:
        compiled = _compile_ast(source, _parse(source))
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"does not compile: {exc.message}") from None
    if allowed is not None and not compiled.names <= allowed:
        unknown = ", ".join(sorted(compiled.names - allowed))
        raise ExpressionError(f"reads unknown name(s) {unknown}; available: {', '.join(sorted(allowed))}")
    return compiled


@dataclass(frozen=True)
class Template:
    """A compiled spec template (a URL path, a query value): rendered with the names it may read."""

    source: str
    names: frozenset[str] = field(compare=False)
    _render: Callable[..., str] = field(repr=False, compare=False)

    def render(self, **names: Any) -> str:
        return self._render(**names)


def compile_template(source: str, allowed: frozenset[str] | None = None) -> Template:
    """Compile a string template in the same sandbox as expressions; `allowed` as for `compile_expression`."""
    try:
        template = _ENV.from_string(source)
        names = frozenset(meta.find_undeclared_variables(_ENV.parse(source)))
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"does not compile: {exc.message}") from None
    if allowed is not None and not names <= allowed:
        unknown = ", ".join(sorted(names - allowed))
        raise ExpressionError(f"reads unknown name(s) {unknown}; available: {', '.join(sorted(allowed))}")
    return Template(source, names, template.render)


# ----------------------------------------------------------------------------------------- reads

Read = tuple[str, tuple[str | None, ...]]  # `request.messages[0].content` → ("request", ("messages", None, "content"))


def reads(source: str, template: bool = False) -> list[Read]:
    """Every attribute path an expression (or template) reads from a name, for `engine check` to hold to the
    fields that name has. An index or a computed key is None (any element); a method called on a value
    (`request.model.startswith(...)`) is not a field, so the path ends before it. `source` must compile."""
    tree: nodes.Node = _ENV.parse(source) if template else _parse(source)
    found: list[Read] = []
    _collect(tree, found)
    return found


def compared(source: str, name: str) -> list[str]:
    """The string constants an expression compares `name` with (`operation == 'responses'`, `operation in
    ('a', 'b')`), for `engine check` to hold to the values the name can have; a substring test
    (`'chat' in operation`) is no such comparison. `source` must compile."""
    found: list[str] = []

    def named(side: nodes.Expr) -> bool:
        return isinstance(side, nodes.Name) and side.name == name

    def strings(side: nodes.Expr) -> list[str]:
        values = side.items if isinstance(side, nodes.Tuple | nodes.List) else [side]
        return [v.value for v in values if isinstance(v, nodes.Const) and isinstance(v.value, str)]

    tree = _parse(source)
    for compare in [tree, *tree.find_all(nodes.Compare)]:
        if not isinstance(compare, nodes.Compare):
            continue  # the root, when it is no comparison (`find_all` lists only what is below it)
        left = compare.expr
        for operand in compare.ops:
            right = operand.expr
            if operand.op in ("eq", "ne"):
                found += strings(right) if named(left) else strings(left) if named(right) else []
            elif operand.op in ("in", "notin") and named(left) and isinstance(right, nodes.Tuple | nodes.List):
                found += strings(right)
            left = right
    return found


def _collect(node: nodes.Node, found: list[Read]) -> None:
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        _collect(node.node.node, found)  # the method's receiver; its own name is not a field
        for child in [*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs]:
            if child is not None:
                _collect(child, found)
        return
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        steps: list[str | None] = []
        base: nodes.Node = node
        while isinstance(base, nodes.Getattr | nodes.Getitem):
            if isinstance(base, nodes.Getattr):
                steps.append(base.attr)
            elif isinstance(base.arg, nodes.Const) and isinstance(base.arg.value, str):
                steps.append(base.arg.value)
            else:
                steps.append(None)
                _collect(base.arg, found)
            base = base.node
        if isinstance(base, nodes.Name):
            found.append((base.name, tuple(reversed(steps))))
        else:
            _collect(base, found)
        return
    for inner in node.iter_child_nodes():
        _collect(inner, found)


# ----------------------------------------------------------------------------------------- folding

_TRUE, _FALSE = nodes.Const(True), nodes.Const(False)
_MISSING = object()


def _const(value: Any) -> nodes.Expr | None:
    return nodes.Const(value) if has_safe_repr(value) else None


def _lookup(container: Any, key: Any) -> Any:
    if isinstance(container, dict):
        return container.get(key)  # a missing key is falsy, as ChainableUndefined makes it at run time
    return _MISSING


def _fold(node: nodes.Expr, known: dict[str, Any]) -> nodes.Expr:
    """Partially evaluate `node` in a boolean context, with the names in `known` fixed."""
    if isinstance(node, nodes.Name) and node.name in known:
        return _const(known[node.name]) or node
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        return _fold_lookup(node, known)
    if isinstance(node, nodes.And):
        left, right = _fold(node.left, known), _fold(node.right, known)
        if isinstance(left, nodes.Const):
            return right if left.value else _FALSE
        if isinstance(right, nodes.Const):
            return left if right.value else _FALSE
        return nodes.And(left, right)
    if isinstance(node, nodes.Or):
        left, right = _fold(node.left, known), _fold(node.right, known)
        if isinstance(left, nodes.Const):
            return _TRUE if left.value else right
        if isinstance(right, nodes.Const):
            return _TRUE if right.value else left
        return nodes.Or(left, right)
    if isinstance(node, nodes.Not):
        inner = _fold(node.node, known)
        return nodes.Const(not inner.value) if isinstance(inner, nodes.Const) else nodes.Not(inner)
    if isinstance(node, nodes.CondExpr):
        test = _fold(node.test, known)
        if isinstance(test, nodes.Const):
            chosen = node.expr1 if test.value else node.expr2
            return _fold(chosen, known) if chosen is not None else _FALSE
        return nodes.CondExpr(test, node.expr1, node.expr2)
    if isinstance(node, nodes.Compare):
        return _fold_compare(node, known)
    return node


def _fold_lookup(node: nodes.Getattr | nodes.Getitem, known: dict[str, Any]) -> nodes.Expr:
    """`model.reasoning` (or `model['reasoning']`) with `model` known → its value, when it has a literal."""
    base = node.node
    path: list[Any] = []
    while isinstance(base, nodes.Getattr | nodes.Getitem):
        if isinstance(base, nodes.Getattr):
            path.append(base.attr)
        elif isinstance(base.arg, nodes.Const):
            path.append(base.arg.value)
        else:
            return node
        base = base.node
    if not isinstance(base, nodes.Name) or base.name not in known:
        return node
    if isinstance(node, nodes.Getattr):
        key = node.attr
    elif isinstance(node.arg, nodes.Const):
        key = node.arg.value
    else:
        return node
    value = known[base.name]
    for part in [*reversed(path), key]:
        value = _lookup(value, part)
        if value is _MISSING:
            return node
    return _const(value) or node


def _fold_compare(node: nodes.Compare, known: dict[str, Any]) -> nodes.Expr:
    expr = _fold(node.expr, known)
    ops = [nodes.Operand(op.op, _fold(op.expr, known)) for op in node.ops]
    folded = nodes.Compare(expr, ops)
    if isinstance(expr, nodes.Const) and all(isinstance(op.expr, nodes.Const | nodes.Tuple) for op in ops):
        try:
            return nodes.Const(folded.as_const(nodes.EvalContext(_ENV)))
        except nodes.Impossible:
            pass
    return folded
