"""State-patch records: the source record's headers survive the round trip; a broken patch is refused."""

from __future__ import annotations

import pytest

from shopbotly.mapper.patches import PatchOrigin, patch_headers, read_patch
from shopbotly.mapper.state import StateKind

pytestmark = pytest.mark.unit

ORIGINAL = [
    ("event_id", b"e1"),
    ("tenant", b"demo"),
    ("trace_id", b"t1"),
    ("schema", b"shopbotly.raw-event/1"),
]


def test_a_patch_carries_its_source_and_gives_back_the_original_headers() -> None:
    origin = PatchOrigin("p.raw-events.v1", 2, 41, b"demo:jane@example.com")
    headers = patch_headers(ORIGINAL, kind=StateKind.ORDER, rules=["a", "b,c"], origin=origin)
    patch = read_patch(headers)
    assert (patch.kind, patch.rules, patch.origin) == (StateKind.ORDER, ("a", "b,c"), origin)
    assert patch.headers == ORIGINAL
    # A patch of a patch (a redriven copy) does not stack headers.
    again = patch_headers(headers, kind=StateKind.TICKET, rules=[], origin=origin)
    assert len(again) == len(headers)


def test_a_source_without_key_stays_without_key() -> None:
    origin = PatchOrigin("p.crm-results.v1", 0, 7, None)
    assert (
        read_patch(patch_headers(ORIGINAL, kind=StateKind.TICKET, rules=[], origin=origin)).origin.key is None
    )


@pytest.mark.parametrize(
    ("drop", "replace", "error"),
    [
        ("patch.kind", None, "state patch without header patch.kind"),
        (None, ("patch.rules", b"{"), "state patch with a malformed header: JSONDecodeError"),
        (None, ("patch.rules", b'"a"'), "patch.rules: expected a JSON array of rule ids"),
        (None, ("patch.kind", b"invoice"), "'invoice' is not a valid StateKind"),
    ],
)
def test_a_broken_patch_is_refused_with_the_reason(
    drop: str | None, replace: tuple[str, bytes] | None, error: str
) -> None:
    origin = PatchOrigin("p.raw-events.v1", 0, 1, b"k")
    headers = patch_headers(ORIGINAL, kind=StateKind.ORDER, rules=["a"], origin=origin)
    headers = [(k, v) for k, v in headers if k != drop]
    if replace is not None:
        headers = [(k, replace[1] if k == replace[0] else v) for k, v in headers]
    with pytest.raises(ValueError, match=error):
        read_patch(headers)
