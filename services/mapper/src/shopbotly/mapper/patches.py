"""The state-patches topic's records: what stage 1 sends to the owner of an order or ticket (stage 2).

A record is a copy of the source record (its value, headers and timestamp, as in a dead letter), keyed by
the order or ticket it changes (`tenant:id`), plus `patch.*` headers: which state, which rules, and where
the source record is. Stage 2 needs the origin to dead-letter the source record itself, so a dead letter
and its redrive look exactly as if stage 1 had written them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from shopbotly.common.events import Headers
from shopbotly.mapper.state import StateKind

__all__ = ["PATCH_HEADERS", "Patch", "PatchOrigin", "patch_headers", "read_patch"]

PATCH_HEADERS = (
    "patch.kind",
    "patch.rules",
    "patch.origin.topic",
    "patch.origin.partition",
    "patch.origin.offset",
    "patch.origin.key",
)


@dataclass(frozen=True)
class PatchOrigin:
    """The source record: a raw event or a crm-result."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


@dataclass(frozen=True)
class Patch:
    kind: StateKind
    rules: tuple[str, ...]  # the raw event's rules that change this state; empty for a crm-result
    origin: PatchOrigin
    headers: Headers  # the source record's own headers


def patch_headers(
    original: Sequence[tuple[str, bytes]], *, kind: StateKind, rules: Sequence[str], origin: PatchOrigin
) -> Headers:
    headers = [(k, v) for k, v in original if k not in PATCH_HEADERS]
    headers += [
        ("patch.kind", kind.value.encode()),
        ("patch.rules", orjson.dumps(list(rules))),
        ("patch.origin.topic", origin.topic.encode()),
        ("patch.origin.partition", str(origin.partition).encode()),
        ("patch.origin.offset", str(origin.offset).encode()),
    ]
    if origin.key is not None:  # absent, not empty: a raw event may have had no key at all
        headers.append(("patch.origin.key", origin.key))
    return headers


def read_patch(headers: Sequence[tuple[str, bytes]]) -> Patch:
    """ValueError names what is missing or malformed."""
    found = {k: v for k, v in headers if k in PATCH_HEADERS}
    try:
        kind = StateKind(found["patch.kind"].decode())
        rules = orjson.loads(found["patch.rules"])
        origin = PatchOrigin(
            topic=found["patch.origin.topic"].decode(),
            partition=int(found["patch.origin.partition"]),
            offset=int(found["patch.origin.offset"]),
            key=found.get("patch.origin.key"),
        )
    except KeyError as exc:
        raise ValueError(f"state patch without header {exc.args[0]}") from None
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"state patch with a malformed header: {type(exc).__name__}") from None
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        raise ValueError("state patch header patch.rules: expected a JSON array of rule ids")
    original = [(k, v) for k, v in headers if k not in PATCH_HEADERS]
    return Patch(kind, tuple(rules), origin, original)
