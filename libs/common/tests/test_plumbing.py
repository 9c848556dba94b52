"""Ids, error classes, log redaction and DLQ headers."""

import io
import json
import sys

import pytest

from shopbotly.common import ids
from shopbotly.common.dlq import DeadLetter, dead_letter_headers
from shopbotly.common.errors import ErrorClass, classify_http_status
from shopbotly.common.events import decode_headers
from shopbotly.common.logging import configure_logging, get_logger, mask_email

pytestmark = pytest.mark.unit


def test_command_id_is_deterministic_and_distinct() -> None:
    a = ids.command_id("evt-1", "rule-a", 0)
    assert a == ids.command_id("evt-1", "rule-a", 0)
    assert (
        len(
            {
                a,
                ids.command_id("evt-1", "rule-a", 1),
                ids.command_id("evt-1", "rule-b", 0),
                ids.command_id("evt-2", "rule-a", 0),
            }
        )
        == 4
    )


def test_content_event_id_depends_on_source_and_body() -> None:
    assert ids.content_event_id("s", b"x") == ids.content_event_id("s", b"x")
    assert ids.content_event_id("s", b"x") != ids.content_event_id("t", b"x")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (204, None),
        (400, ErrorClass.PERMANENT),
        (422, ErrorClass.PERMANENT),
        (401, ErrorClass.AUTH),
        (409, ErrorClass.RETRYABLE),
        (429, ErrorClass.RETRYABLE),
        (503, ErrorClass.RETRYABLE),
    ],
)
def test_http_status_classes(status: int, expected: ErrorClass | None) -> None:
    assert classify_http_status(status) == expected


def test_logs_are_json_with_secrets_and_emails_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    configure_logging("test", fmt="json")
    get_logger().info("hello", api_key="abc123", customer="jane.doe@example.com", tenant="demo")
    line = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert line["api_key"] == "***"
    assert line["customer"] == "j***@example.com"
    assert line["service"] == "test" and line["tenant"] == "demo"
    assert mask_email("write to bob@shop.io now") == "write to b***@shop.io now"


def test_dead_letter_headers_are_a_superset_and_replace_old_errors() -> None:
    original = [("event_id", b"e1"), ("tenant", b"demo"), ("error.class", b"retryable")]
    letter = DeadLetter(ErrorClass.PERMANENT, "bad", 3, "t", 1, 42, "mapper")
    headers = decode_headers(dead_letter_headers(original, letter))
    assert headers["event_id"] == "e1" and headers["error.class"] == "permanent"
    assert headers["origin.offset"] == "42" and headers["error.attempts"] == "3"
    assert [k for k, _ in dead_letter_headers(original, letter)].count("error.class") == 1
