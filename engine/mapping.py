"""Field mappings: a provider spec's `[[mappings]]` blocks.

Mappings are how a spec says "this provider calls it `random_seed`", "this model rejects `temperature`",
"this provider has no `developer` role" or "cap `max_tokens` at 8192" without Python. Keys are paths
into the body: dots descend into objects, and `[]` after a key applies to every element of that list
(`messages[].name`). Blocks with `stage = "request"` see the OpenAI-shaped request before the wire codec;
`stage = "wire"` blocks see the provider's own body after it.

Nothing is mutated in place: every change copies the containers on its path, so the client's decoded
request is never altered behind the engine's back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.rules import Expression, compile_expression
from engine.spec.loader import REQUEST_NAMES
from engine.spec.models import Mapping

MISSING: Any = object()

Segment = tuple[str, bool]  # (key, applies to each element of a list)


def parse_path(path: str) -> tuple[Segment, ...]:
    return tuple((part.removesuffix("[]"), part.endswith("[]")) for part in path.split("."))


def get_path(body: dict[str, Any], path: str) -> Any:
    """The value at a path without `[]`, or MISSING."""
    node: Any = body
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def update(node: dict[str, Any], segments: tuple[Segment, ...], change: Callable[[Any], Any]) -> None:
    """Replace the value at `segments` (in `node`, which the caller owns) by `change(old)`; `old` is MISSING
    when absent and a result of MISSING deletes the key.

    Copy on write: a container below `node` is copied only when something in it changes, so the client's
    decoded request is never altered, and a mapping that finds nothing to do (say, dropping a message field
    no message has) copies nothing: on a 200-turn conversation that was every message, on every request."""
    (key, each), rest = segments[0], segments[1:]
    old = node.get(key, MISSING)
    new = _changed(old, each, rest, change)
    if new is old:
        return
    if new is MISSING:
        node.pop(key, None)
    else:
        node[key] = new


def _changed(old: Any, each: bool, rest: tuple[Segment, ...], change: Callable[[Any], Any]) -> Any:
    """The new value of a key whose value is `old`: `old` itself (not a copy) when nothing changes."""
    if each:
        if not isinstance(old, list) or not rest:
            return old
        copies: list[Any] | None = None
        for index, item in enumerate(old):
            if isinstance(item, dict) and (changed := _updated(item, rest, change)) is not item:
                if copies is None:
                    copies = list(old)
                copies[index] = changed
        return old if copies is None else copies
    if not rest:
        return change(old)
    if old is MISSING:
        if change(MISSING) is MISSING:
            return old  # nothing to delete, nothing to create
        return _updated({}, rest, change)
    return _updated(old, rest, change) if isinstance(old, dict) else old


def _updated(node: dict[str, Any], segments: tuple[Segment, ...], change: Callable[[Any], Any]) -> dict[str, Any]:
    """`node` with the change applied: a shallow copy when it changes, `node` itself otherwise."""
    (key, each), rest = segments[0], segments[1:]
    old = node.get(key, MISSING)
    new = _changed(old, each, rest, change)
    if new is old:
        return node
    copy = dict(node)
    if new is MISSING:
        copy.pop(key, None)
    else:
        copy[key] = new
    return copy


def _const(value: Any) -> Callable[[Any], Any]:
    return lambda _old: value


def _default(value: Any) -> Callable[[Any], Any]:
    return lambda old: value if old is MISSING else old


def _clamp(low: float | None, high: float | None) -> Callable[[Any], Any]:
    def change(old: Any) -> Any:
        if not isinstance(old, int | float) or isinstance(old, bool):
            return old
        if low is not None and old < low:
            return type(old)(low)
        if high is not None and old > high:
            return type(old)(high)
        return old

    return change


def _replace(table: dict[str, Any]) -> Callable[[Any], Any]:
    return lambda old: table.get(old, old) if isinstance(old, str) else old


@dataclass(frozen=True)
class Step:
    segments: tuple[Segment, ...]
    change: Callable[[Any], Any]


@dataclass(frozen=True)
class CompiledMapping:
    stage: str
    when: Expression | None
    renames: tuple[tuple[str, str], ...]
    steps: tuple[Step, ...]
    compute: tuple[tuple[tuple[Segment, ...], Expression], ...]

    @classmethod
    def compile(cls, spec: Mapping) -> CompiledMapping:
        steps = [Step(parse_path(p), _const(MISSING)) for p in spec.drop]
        steps += [Step(parse_path(p), _default(v)) for p, v in spec.default.items()]
        steps += [Step(parse_path(p), _const(v)) for p, v in spec.set.items()]
        steps += [Step(parse_path(p), _clamp(c.min, c.max)) for p, c in spec.clamp.items()]
        steps += [Step(parse_path(p), _replace(t)) for p, t in spec.replace.items()]
        return cls(
            stage=spec.stage,
            when=compile_expression(spec.when, REQUEST_NAMES) if spec.when else None,
            renames=tuple(spec.rename.items()),
            steps=tuple(steps),
            compute=tuple((parse_path(p), compile_expression(v, REQUEST_NAMES)) for p, v in spec.compute.items()),
        )

    def specialized(self, **known: Any) -> CompiledMapping | None:
        """This block for one model and operation: None when its condition is decided false, without a
        condition when decided true, else with the residual condition. See `Expression.specialize`."""
        if self.when is None:
            return self
        when = self.when.specialize(**known)
        if when is False:
            return None
        return dataclasses.replace(self, when=None if when is True else when)

    def apply(self, body: dict[str, Any], names: dict[str, Any]) -> None:
        if self.when is not None and not self.when.holds(**names):
            return
        for old, new in self.renames:
            value = get_path(body, old)
            if value is MISSING:
                continue
            update(body, parse_path(old), _const(MISSING))
            update(body, parse_path(new), _default(value))
        for step in self.steps:
            update(body, step.segments, step.change)
        for segments, expression in self.compute:
            result = expression(**names)
            update(body, segments, _const(MISSING if result is None else result))


def apply_stage(mappings: tuple[CompiledMapping, ...], stage: str, body: dict[str, Any], names: dict[str, Any]) -> None:
    for mapping in mappings:
        if mapping.stage == stage:
            mapping.apply(body, names)
