"""Each documented transform, including what happens to values it cannot handle."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shopbotly.common.config import TransformSpec
from shopbotly.mapper.transforms import FieldError, compile_transform

pytestmark = pytest.mark.unit


def run(spec: Any, value: Any) -> Any:
    return compile_transform(TransformSpec.model_validate(spec))(value)


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ("trim", "  Jane \n", "Jane"),
        ("trim", [" a ", 3], ["a", 3]),
        ("lowercase", "JaNe@Example.COM", "jane@example.com"),
        ("uppercase", "usd", "USD"),
        ("first_name", "  Mary  Ann Smith ", "Mary"),
        ("last_name", "Mary  Ann Smith", "Ann Smith"),
        ("last_name", "Cher", None),
        ("first_name", "   ", None),
        ("strip_html", "<p>Hi&nbsp;there,</p><p>it&#39;s <b>done</b></p>", "Hi there,\nit's done"),
        ("string", 820982911946154508, "820982911946154508"),
        ("string", True, "true"),
        ("string", {"a": 1}, '{"a":1}'),
        ("email", " Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ({"e164": "US"}, "(415) 555-0134", "+14155550134"),
        ("e164", "+49 30 901820", "+4930901820"),
        ({"e164": {"region": "GB"}}, 2079460000, "+442079460000"),
        ("iso_date", "2026-03-02T05:14:59-05:00", "2026-03-02T10:14:59Z"),
        ("iso_date", 1772446530, "2026-03-02T10:15:30Z"),
        ("iso_date", 1772446530123, "2026-03-02T10:15:30.123Z"),
        ({"iso_date": {"unit": "s"}}, "1772446530", "2026-03-02T10:15:30Z"),
        ("iso_date", "Mon, 02 Mar 2026 10:15:30 GMT", "2026-03-02T10:15:30Z"),
        ("iso_date", "2026-03-02 10:15:30", "2026-03-02T10:15:30Z"),
        ({"iso_date": "date"}, "2026-03-02T23:30:00-05:00", "2026-03-03"),
        ({"iso_date": "date"}, "2026-03-02", "2026-03-02"),
        ({"truncate": 4}, "abcdef", "abcd"),
        ({"truncate": 2}, ["abc", "d"], ["ab", "d"]),
        ("split", "vip, wholesale ,, ", ["vip", "wholesale"]),
        ({"split": ";"}, "a;b", ["a", "b"]),
        ("split", ["already"], ["already"]),
        ("join", ["a", None, 3], "a, 3"),
        ({"join": "|"}, ["a", "b"], "a|b"),
        ({"map": {"values": {"1": "new", "4": "closed"}}}, "4", "closed"),
        ({"map": {"values": {"1": "new", "4": "closed"}}}, 1, "new"),
        ({"map": {"values": {"1": "new"}}}, "9", "9"),
        ({"map": {"values": {"1": "new"}, "fallback": "drop"}}, "9", None),
        ({"map": {"values": {"true": "yes"}}}, True, "yes"),
        ("minor_units", 4999, "49.99"),
        ("minor_units", "120", "1.20"),
        ({"minor_units": 0}, 5000, "5000"),
        ({"minor_units": 3}, 12345, "12.345"),
    ],
)
def test_transform(spec: Any, value: Any, expected: Any) -> None:
    assert run(spec, value) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "trim",
        "email",
        "e164",
        "iso_date",
        {"truncate": 3},
        "split",
        "join",
        "minor_units",
        "string",
        "first_name",
    ],
)
def test_none_passes_through(spec: Any) -> None:
    assert run(spec, None) is None


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        ("email", "jane@", "not a valid e-mail address"),
        ("email", 42, "email expects text, got number"),
        ("e164", "0301234567", "needs a +country code"),
        ({"e164": "US"}, "12", "not a possible phone number (region US)"),
        ("iso_date", "next tuesday", "not a date or time (string)"),
        ("iso_date", [2026], "not a date or time (array)"),
        ({"map": {"values": {"a": 1}, "fallback": "error"}}, "b", "map has no entry"),
        ("minor_units", "12,50", "minor_units expects a number"),
        ("minor_units", True, "minor_units expects a number"),
        ("trim", {"a": 1}, "trim expects text, got object"),
        ("split", 3, "split expects text, got number"),
        ("join", {"a": 1}, "join expects an array, got object"),
    ],
)
def test_invalid_values_raise_a_clear_error_without_the_value(spec: Any, value: Any, message: str) -> None:
    with pytest.raises(FieldError, match=re.escape(message)) as err:
        run(spec, value)
    if isinstance(value, str) and len(value) > 3:
        assert value not in str(err.value)  # values may be personal data; errors never quote them


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("drop", None), ("keep", "not a phone")],
)
def test_on_invalid_policies(policy: str, expected: Any) -> None:
    assert run({"e164": {"region": "US", "on_invalid": policy}}, "not a phone") == expected
    assert run({"email": {"on_invalid": policy}}, "not a phone") == expected
    assert run({"iso_date": {"on_invalid": policy}}, "not a phone") == expected
