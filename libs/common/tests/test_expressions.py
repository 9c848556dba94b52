"""The compiled expressions give what `jmespath.search` gives, on any document."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopbotly.common.expressions import compile_expression, truthy

pytestmark = pytest.mark.unit

EXPRESSIONS = [
    "a",
    "a.b.c",
    "a[0]",
    "a[-1].b",
    "a.b[1][0]",
    "@",
    "`1`",
    "'text'",
    "a == 'x'",
    "a != `1`",
    "a == `true`",
    "a == `0`",
    "a > `0.5`",
    "a.b <= a.c",
    "a < 'm'",
    "a && b",
    "a || b || 'fallback'",
    "!a",
    "!(a && b)",
    "a.b && 'yes' || 'no'",
    "a | b",
    "a[*].b",
    "a[?b == `1`].c",
    "length(a)",
    "not_null(a.b, b, 'none')",
    "a.{x: b, y: c}",
    "[a, b]",
    "a[].b[]",
    "type(a) == 'string' && a",
]

keys = st.sampled_from(["a", "b", "c", "x"])
values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.sampled_from(["", "x", "m", "z"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


def reference(expression: str, document: Any) -> Any:
    try:
        return jmespath.search(expression, document)
    except TypeError:
        # jmespath compares a string with a number in Python and raises; JMESPath says null.
        return None


@settings(max_examples=60, deadline=None)
@given(document=values)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_compiled_expression_matches_jmespath(expression: str, document: Any) -> None:
    compiled = compile_expression(expression)
    try:
        expected = reference(expression, document)
    except jmespath.exceptions.JMESPathError as exc:
        with pytest.raises(type(exc)):
            compiled.search(document)
        return
    got = compiled.search(document)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
        (0, True),
        (0.0, True),
        (True, True),
        ("0", True),
        ([None], True),
        ({"a": None}, True),
    ],
)
def test_truthiness_is_jmespaths(value: Any, expected: bool) -> None:
    assert truthy(value) is expected
    # What `!` and `||` decide on: the compiled expressions and the interpreter agree with it.
    assert truthy(value) is (jmespath.search("!!@", value) is True)
