"""The documented field transforms (docs/services/mapper.md), compiled from config into plain functions.

Every transform passes None through untouched, so a chain never invents a value; `on_invalid` decides what a
value that cannot be transformed becomes: `error` (the rule fails and the event is dead-lettered with the
reason), `drop` (the field is left out) or `keep` (the value goes through unchanged).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

import orjson
import phonenumbers

from shopbotly.common.config import TransformSpec

__all__ = ["FieldError", "Transform", "compile_transform", "to_text"]

Transform = Callable[[Any], Any]


class FieldError(ValueError):
    """A value could not be produced; the message says which value and why (never the value itself)."""


def _kind(value: Any) -> str:
    return {
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def to_text(value: Any) -> str:
    """A value as text (templates, `string`): JSON for arrays and objects, `true`/`false` for booleans."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return orjson.dumps(value).decode()


def _on_strings(fn: Callable[[str], Any], name: str) -> Transform:
    """Apply to a string, or to each string of an array (tags); other types are an error."""

    def apply(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            return fn(value)
        if isinstance(value, list):
            return [fn(v) if isinstance(v, str) else v for v in value]
        raise FieldError(f"{name} expects text, got {_kind(value)}")

    return apply


def _invalid(policy: str, value: Any, reason: str) -> Any:
    if policy == "drop":
        return None
    if policy == "keep":
        return value
    raise FieldError(reason)


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def _email(spec: TransformSpec) -> Transform:
    def apply(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            return _invalid(spec.on_invalid, value, f"email expects text, got {_kind(value)}")
        normalized = value.strip().lower()
        if not _EMAIL.match(normalized):
            return _invalid(spec.on_invalid, value, "not a valid e-mail address")
        return normalized

    return apply


@lru_cache(maxsize=8192)
def _e164_number(text: str, region: str | None) -> str | None:
    """E.164 form of a phone number, None when impossible. Cached: customers write again and again, and
    parsing is the most expensive step of a typical mapping."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _e164(spec: TransformSpec) -> Transform:
    def apply(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            return _invalid(spec.on_invalid, value, f"e164 expects text, got {_kind(value)}")
        text = str(value).strip()
        if not text:
            return None
        formatted = _e164_number(text[:64], spec.region)
        if formatted is None:
            where = f"region {spec.region}" if spec.region else "no default region: needs a +country code"
            return _invalid(spec.on_invalid, value, f"not a possible phone number ({where})")
        return formatted

    return apply


def _parse_datetime(value: Any, unit: str) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        if unit == "ms" or (unit == "auto" and abs(seconds) >= 1e11):
            seconds /= 1000.0
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isdigit():
        return _parse_datetime(int(text), unit)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso_date(spec: TransformSpec) -> Transform:
    def apply(value: Any) -> Any:
        if value is None:
            return None
        parsed = _parse_datetime(value, spec.unit)
        if parsed is None:
            return _invalid(spec.on_invalid, value, f"not a date or time ({_kind(value)})")
        if spec.format == "date":
            if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
                return value.strip()  # a plain date has no zone to convert from
            return parsed.astimezone(UTC).date().isoformat()
        utc = parsed.astimezone(UTC)
        spec_ = "milliseconds" if utc.microsecond else "seconds"
        return utc.isoformat(timespec=spec_).replace("+00:00", "Z")

    return apply


def _truncate(length: int) -> Transform:
    return _on_strings(lambda s: s[:length], "truncate")


def _split(separator: str) -> Transform:
    def apply(value: Any) -> Any:
        if value is None or isinstance(value, list):
            return value
        if not isinstance(value, str):
            raise FieldError(f"split expects text, got {_kind(value)}")
        return [part.strip() for part in value.split(separator) if part.strip()]

    return apply


def _join(separator: str) -> Transform:
    def apply(value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise FieldError(f"join expects an array, got {_kind(value)}")
        return separator.join(to_text(v) for v in value if v is not None)

    return apply


def _map(spec: TransformSpec) -> Transform:
    table = dict(spec.values or {})

    def apply(value: Any) -> Any:
        if value is None:
            return None
        key = to_text(value)
        if key in table:
            return table[key]
        if spec.fallback == "error":
            raise FieldError(f"map has no entry for this value (known: {sorted(table)})")
        return None if spec.fallback == "drop" else value

    return apply


def _minor_units(exponent: int) -> Transform:
    quantum = Decimal(1).scaleb(-exponent)

    def apply(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise FieldError(f"minor_units expects a number, got {_kind(value)}")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise FieldError("minor_units expects a number") from None
        if not amount.is_finite():
            raise FieldError("minor_units expects a finite number")
        return str(amount.scaleb(-exponent).quantize(quantum))

    return apply


_TAG = re.compile(r"<[^>]*>")
_BREAK = re.compile(r"<\s*(br\s*/?|/p|/div|/li)\s*>", re.I)


def _strip_html(text: str) -> str:
    text = _BREAK.sub("\n", text)
    text = html.unescape(_TAG.sub("", text))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def _first_name(text: str) -> str | None:
    parts = text.split()
    return parts[0] if parts else None


def _last_name(text: str) -> str | None:
    parts = text.split()
    return " ".join(parts[1:]) or None


def _string(value: Any) -> Any:
    return None if value is None else to_text(value)


def compile_transform(spec: TransformSpec) -> Transform:
    """The function for one configured transform step."""
    name = spec.name
    simple: dict[str, Transform] = {
        "trim": _on_strings(str.strip, "trim"),
        "lowercase": _on_strings(str.lower, "lowercase"),
        "uppercase": _on_strings(str.upper, "uppercase"),
        "first_name": _on_strings(_first_name, "first_name"),
        "last_name": _on_strings(_last_name, "last_name"),
        "strip_html": _on_strings(_strip_html, "strip_html"),
        "string": _string,
    }
    if name in simple:
        return simple[name]
    if name == "email":
        return _email(spec)
    if name == "e164":
        return _e164(spec)
    if name == "iso_date":
        return _iso_date(spec)
    if name == "truncate":
        assert spec.length is not None  # the config model requires it
        return _truncate(spec.length)
    if name == "split":
        return _split(spec.separator if spec.separator is not None else ",")
    if name == "join":
        return _join(spec.separator if spec.separator is not None else ", ")
    if name == "map":
        return _map(spec)
    if name == "minor_units":
        return _minor_units(spec.exponent)
    raise ValueError(f"unknown transform {name!r}")  # unreachable: the config model rejects it
