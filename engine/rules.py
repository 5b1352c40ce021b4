"""Conditions and computed values written in specs, compiled once at load time.

Specs speak a small expression language: Jinja2 expressions evaluated in an immutable sandbox, so a spec
can read the request but never mutate it, call arbitrary Python or reach the filesystem. Missing keys are
falsy and chain (`request.stream_options.include_usage` is simply false when absent), which keeps
conditions short. Compiling happens at load, so a syntax error fails `engine check`, never a request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, meta
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

    def __call__(self, **names: Any) -> Any:
        return self._fn(**names)

    def holds(self, **names: Any) -> bool:
        return bool(self._fn(**names))

    def reads_only(self, *allowed: str) -> bool:
        """True when the expression reads nothing but `allowed`, so it can be decided ahead of time."""
        return self.names <= set(allowed)


def compile_expression(source: str, allowed: frozenset[str] | None = None) -> Expression:
    """Compile `source`; with `allowed`, reading any other name is an error (a typo, usually)."""
    try:
        fn = _ENV.compile_expression(source, undefined_to_none=True)
        names = frozenset(meta.find_undeclared_variables(_ENV.parse(f"{{{{ {source} }}}}")))
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"does not compile: {exc.message}") from None
    if allowed is not None and not names <= allowed:
        unknown = ", ".join(sorted(names - allowed))
        raise ExpressionError(f"reads unknown name(s) {unknown}; available: {', '.join(sorted(allowed))}")
    return Expression(source, names, fn)
