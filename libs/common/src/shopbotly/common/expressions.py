"""JMESPath expressions compiled to Python closures, for per-event hot paths (ingest's id/type/subject
extraction, the mapper's triggers and fields), and JMESPath truthiness.

The `jmespath` package interprets the syntax tree on every search (and builds a new interpreter each
time). The node types that make up nearly every trigger and field (fields, sub-expressions, indexes,
literals, comparisons, `&&`, `||`, `!`, pipes) become closures here, with the package's semantics; any
other node (functions, projections, filters, multiselects) is handed to one shared `TreeInterpreter`, so
the result is always what `jmespath.search` gives. libs/common/tests/test_expressions.py checks the two agree.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import jmespath
from jmespath.visitor import TreeInterpreter

__all__ = ["Compiled", "CompiledExpression", "compile_expression", "is_false", "truthy"]

Compiled = Callable[[Any], Any]

_INTERPRETER = TreeInterpreter()


def is_false(value: Any) -> bool:
    """JMESPath falsiness: "", [], {}, null and false (0 is true)."""
    return value == "" or value == [] or value == {} or value is None or value is False


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, "", [] and {} are false; everything else (0 included) is true."""
    return not is_false(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equals(left: Any, right: Any) -> bool:
    # 0/1 and false/true are different values in JMESPath, though equal in Python.
    if _number(left) and left in (0, 1):
        if isinstance(right, bool):
            return False
    elif _number(right) and right in (0, 1) and isinstance(left, bool):
        return False
    return bool(left == right)


_ORDER = {"lt": operator.lt, "gt": operator.gt, "lte": operator.le, "gte": operator.ge}


def _comparator(op: str, left: Compiled, right: Compiled) -> Compiled:
    if op == "eq":
        return lambda v: _equals(left(v), right(v))
    if op == "ne":
        return lambda v: not _equals(left(v), right(v))
    compare = _ORDER[op]

    def ordered(value: Any) -> Any:
        a, b = left(value), right(value)
        # Ordering is defined for two numbers or two strings; anything else is null (the package would
        # raise a bare TypeError for a string against a number).
        if (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str)):
            return compare(a, b)
        return None

    return ordered


def _chain(steps: list[Compiled]) -> Compiled:
    def chained(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chained


def _field(name: str) -> Compiled:
    return lambda v: v.get(name) if isinstance(v, dict) else None


def _index(position: int) -> Compiled:
    def indexed(value: Any) -> Any:
        if not isinstance(value, list):
            return None
        try:
            return value[position]
        except IndexError:
            return None

    return indexed


def _fields(node: dict[str, Any]) -> tuple[str, ...] | None:
    """The names of a plain `a.b.c` path, compiled to a loop instead of nested closures."""
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression":
        names: tuple[str, ...] = ()
        for child in node["children"]:
            part = _fields(child)
            if part is None:
                return None
            names += part
        return names
    return None


def _path(names: tuple[str, ...]) -> Compiled:
    def path(value: Any) -> Any:
        for name in names:
            if not isinstance(value, dict):
                return None
            value = value.get(name)
        return value

    return path


def _compile(node: dict[str, Any]) -> Compiled:
    kind = node["type"]
    children = node.get("children", [])
    names = _fields(node)
    if names is not None:
        return _field(names[0]) if len(names) == 1 else _path(names)
    if kind in ("subexpression", "index_expression", "pipe"):
        return _chain([_compile(child) for child in children])
    if kind == "index":
        return _index(node["value"])
    if kind == "literal":
        literal = node["value"]
        return lambda _: literal
    if kind == "current":
        return lambda v: v
    if kind == "comparator":
        return _comparator(node["value"], _compile(children[0]), _compile(children[1]))
    if kind == "and_expression":
        left, right = _compile(children[0]), _compile(children[1])

        def both(value: Any) -> Any:
            matched = left(value)
            return matched if is_false(matched) else right(value)

        return both
    if kind == "or_expression":
        left, right = _compile(children[0]), _compile(children[1])

        def either(value: Any) -> Any:
            matched = left(value)
            return right(value) if is_false(matched) else matched

        return either
    if kind == "not_expression":
        inner = _compile(children[0])

        def negated(value: Any) -> Any:
            result = inner(value)
            if _number(result) and result == 0:
                return False  # !0 is false: 0 is not falsy in JMESPath
            return not result

        return negated
    visit = _INTERPRETER.visit
    tree = cast(Any, node)  # the interpreter's own node type: the same dict
    return lambda v: visit(tree, v)


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """A JMESPath expression ready to run: `search(value)` is what `jmespath.search(source, value)` is."""

    source: str
    # The compiled closure itself (not a method wrapping it): one call per search on the hot path.
    search: Compiled


def compile_expression(source: str) -> CompiledExpression:
    """Compile a JMESPath expression once. Raises jmespath's ParseError (a JMESPathError) if invalid."""
    return CompiledExpression(source, _compile(cast(dict[str, Any], jmespath.compile(source).parsed)))
