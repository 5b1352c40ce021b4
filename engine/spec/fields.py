"""The fields a spec may name: what `engine check` holds mapping paths and `request.*`/`model.*` reads to.

A field tree is built once, at load, from the types themselves: the request types the validator checks
(`engine.operations.OPERATIONS`' `request` column, plus the fields they pass through unchecked,
`UNCHECKED`) and the model row (`ModelRow`, what expressions see as `model`). Nothing here runs per
request. Below a field whose type is open (`dict[str, Any]`, `Any`, a provider extension) nothing is
checked; below a string or number neither (a method call, say), since the sandbox decides those.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

from pydantic import BaseModel
from typing_extensions import is_typeddict

# One step of a path: a key of an object, or "each element of a list" (`[]`, or any index).
Step = tuple[Literal["key", "each"], str]
EACH: Step = ("each", "[]")


@dataclass
class Node:
    """What may be found at one place of a request (or a model row): an object's known keys, a list's
    elements, or anything at all (`open`)."""

    fields: dict[str, Node] = field(default_factory=dict)
    items: Node | None = None
    is_object: bool = False
    open: bool = False

    def merged(self, other: Node) -> Node:
        """What a union of the two may hold (a message of any role, a string or a list of parts)."""
        names = {**self.fields}
        for name, node in other.fields.items():
            names[name] = names[name].merged(node) if name in names else node
        items = self.items.merged(other.items) if self.items and other.items else self.items or other.items
        return Node(names, items, self.is_object or other.is_object, self.open or other.open)

    def graft(self, steps: Iterable[Step]) -> Node:
        """This tree with a declared extension at `steps`: objects on the way, and anything below it."""
        steps = list(steps)
        if not steps or self.open:
            return Node(open=True) if not steps else self
        (kind, name), rest = steps[0], steps[1:]
        if kind == "each":
            return Node(self.fields, (self.items or Node()).graft(rest), self.is_object, self.open)
        child = self.fields.get(name, Node())
        return Node({**self.fields, name: child.graft(rest)}, self.items, True, False)


def node_of(annotation: Any, unchecked: dict[type, tuple[str, ...]]) -> Node:
    """The field tree of a type annotation."""
    origin = get_origin(annotation)
    if origin in (typing.Annotated, NotRequired, Required):
        return node_of(get_args(annotation)[0], unchecked)
    if origin in (Union, types.UnionType):
        nodes = [node_of(arg, unchecked) for arg in get_args(annotation)]
        result = nodes[0]
        for node in nodes[1:]:
            result = result.merged(node)
        return result
    if origin in (list, tuple, set, frozenset):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return Node(items=node_of(args[0], unchecked) if args else Node(open=True))
    if annotation is Any or annotation is dict or origin is dict:
        return Node(open=True)
    if isinstance(annotation, type) and (is_typeddict(annotation) or issubclass(annotation, BaseModel)):
        if issubclass(annotation, BaseModel):
            hints = {name: info.annotation for name, info in annotation.model_fields.items()}
        else:
            hints = typing.get_type_hints(annotation, include_extras=True)
        names = {name: node_of(hint, unchecked) for name, hint in hints.items()}
        names.update((name, Node(open=True)) for name in unchecked.get(annotation, ()) if name not in names)
        return Node(names, is_object=True)
    return Node()  # a string, a number, a literal: nothing below it is a field


def request_tree(types_: Iterable[type]) -> Node:
    """The fields any of these requests may carry."""
    from engine.validate import UNCHECKED as CHAT_UNCHECKED
    from engine.validate_media import UNCHECKED as MEDIA_UNCHECKED

    unchecked = {**CHAT_UNCHECKED, **MEDIA_UNCHECKED}
    result = Node(is_object=True)
    for request in types_:
        result = result.merged(node_of(request, unchecked))
    return result


@functools.cache
def model_tree() -> Node:
    """What expressions see as `model`: the row's fields, its public `id` and its `provider` id."""
    from engine.spec.models import ModelRow

    row = node_of(ModelRow, {})
    return Node({**row.fields, "id": Node(), "provider": Node()}, is_object=True)


def parse_steps(path: str) -> list[Step]:
    """A mapping path (`messages[].content`) as steps."""
    steps: list[Step] = []
    for part in path.split("."):
        steps.append(("key", part.removesuffix("[]")))
        if part.endswith("[]"):
            steps.append(EACH)
    return steps


def show(steps: Iterable[Step]) -> str:
    out = ""
    for kind, name in steps:
        out += name if kind == "each" else (f".{name}" if out else name)
    return out


def unknown_step(tree: Node, steps: list[Step]) -> tuple[int, list[str]] | None:
    """Where `steps` leave the tree: the index of the first step that names no field there, with the
    fields that were there (for a suggestion); None when every step is a field, or unchecked."""
    node = tree
    for index, (kind, name) in enumerate(steps):
        if node.open:
            return None
        if kind == "each":
            if node.items is None:
                return None
            node = node.items
            continue
        if not node.is_object:
            return None
        child = node.fields.get(name)
        if child is None:
            return index, sorted(node.fields)
        node = child
    return None


def suggestion(steps: list[Step], index: int, known: list[str]) -> str:
    """` (did you mean x.y?)`, or nothing when no field is close."""
    close = difflib.get_close_matches(steps[index][1], known, n=1, cutoff=0.6)
    if not close:
        return ""
    fixed = [*steps[:index], ("key", close[0])]
    return f" (did you mean {show(fixed)}?)"
