"""The pure parts of the CLI's Kafka helpers: topic names, bounds, offsets lists, ranges and filters."""

from datetime import UTC, datetime

import orjson
import pytest

from shopbotly.cli._kafka_io import (
    Bound,
    BoundKind,
    FilterError,
    Record,
    RecordFilter,
    clamp_range,
    filter_document,
    format_time,
    parse_bound,
    parse_partition_offset,
    parse_partition_offsets,
    resolve_bound,
    resolve_topic,
)
from shopbotly.common.kafka import KafkaSettings

pytestmark = pytest.mark.unit


def _ms(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp() * 1000)


def _record(value: object, *, key: bytes | None = b"acme:jane@example.com", offset: int = 7) -> Record:
    return Record(
        topic="shopbotly.raw-events.v1",
        partition=1,
        offset=offset,
        timestamp_ms=1_714_557_600_000,
        key=key,
        value=value if isinstance(value, bytes) or value is None else orjson.dumps(value),
        headers=(("tenant", b"acme"), ("event_id", b"e-1"), ("tenant", b"acme2")),
    )


def test_logical_names_get_the_prefix_and_full_names_stay() -> None:
    settings = KafkaSettings(topic_prefix="stage.")
    assert resolve_topic("raw-events.v1", settings) == "stage.raw-events.v1"
    assert resolve_topic(" crm-commands.dlq.v1 ", settings) == "stage.crm-commands.dlq.v1"
    assert resolve_topic("shopbotly.raw-events.v1", settings) == "shopbotly.raw-events.v1"
    assert resolve_topic("scratch", settings) == "scratch"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Bound(BoundKind.OFFSET, 0)),
        ("1234", Bound(BoundKind.OFFSET, 1234)),
        ("earliest", Bound(BoundKind.EARLIEST)),
        ("LATEST", Bound(BoundKind.LATEST)),
        ("2024-05-01T10:00:00Z", Bound(BoundKind.TIME, _ms(2024, 5, 1, 10))),
        ("2024-05-01T12:00:00+02:00", Bound(BoundKind.TIME, _ms(2024, 5, 1, 10))),
        ("2024-05-01T10:00", Bound(BoundKind.TIME, _ms(2024, 5, 1, 10))),  # no zone: UTC
        ("2024-05-01", Bound(BoundKind.TIME, _ms(2024, 5, 1))),
        ("2024-05-01T10:00:00.250Z", Bound(BoundKind.TIME, _ms(2024, 5, 1, 10) + 250)),
    ],
)
def test_bounds_parse(text: str, expected: Bound) -> None:
    assert parse_bound(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5", "cannot be negative"),
        ("yesterday", "is not an offset"),
        ("2024-13-01", "is not an offset"),
        ("1969-12-31T00:00:00Z", "before 1970"),
    ],
)
def test_bad_bounds_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bound(text)


def test_time_bound_prints_as_iso() -> None:
    assert str(parse_bound("2024-05-01T10:00:00Z")) == "2024-05-01T10:00:00.000+00:00"
    assert format_time(0) == "1970-01-01T00:00:00.000+00:00"
    assert str(parse_bound("12")) == "offset 12"


def test_partition_offsets_parse_in_order_without_duplicates() -> None:
    assert parse_partition_offset(" 2:17 ") == (2, 17)
    assert parse_partition_offsets("0:12, 2:7,0:12,1:0") == [(0, 12), (2, 7), (1, 0)]
    for bad in ("0", "a:1", "1:-2", "1:2:3", ""):
        with pytest.raises(ValueError, match=r"PARTITION:OFFSET"):
            parse_partition_offsets(bad)


def test_bounds_resolve_per_partition() -> None:
    assert resolve_bound(Bound(BoundKind.OFFSET, 5), beginning=2, end=9) == 5
    assert resolve_bound(Bound(BoundKind.EARLIEST), beginning=2, end=9) == 2
    assert resolve_bound(Bound(BoundKind.LATEST), beginning=2, end=9) == 9
    assert resolve_bound(Bound(BoundKind.TIME, 1), beginning=2, end=9, offset_for_time=4) == 4
    # No message at or after the time: the range ends (or starts) at the end of the log.
    assert resolve_bound(Bound(BoundKind.TIME, 1), beginning=2, end=9, offset_for_time=None) == 9


@pytest.mark.parametrize(
    ("start", "stop", "expected"),
    [
        (3, 6, (3, 6)),
        (0, 6, (2, 6)),  # before the log start (retention): from the first offset held
        (3, 100, (3, 9)),  # past the end: up to the end
        (7, 4, (7, 7)),  # stop before start: empty
        (50, 60, (9, 9)),  # entirely past the end: empty
    ],
)
def test_ranges_are_clamped_to_what_the_partition_holds(
    start: int, stop: int, expected: tuple[int, int]
) -> None:
    assert clamp_range(start, stop, beginning=2, end=9) == expected


def test_filter_document_shape() -> None:
    doc = filter_document(_record({"type": "order.created", "data": {"total": 0}}))
    assert doc == {
        "topic": "shopbotly.raw-events.v1",
        "partition": 1,
        "offset": 7,
        "timestamp": 1_714_557_600_000,
        "key": "acme:jane@example.com",
        "headers": {"tenant": "acme2", "event_id": "e-1"},  # last value of a repeated header wins
        "value": {"type": "order.created", "data": {"total": 0}},
    }
    assert filter_document(_record(b"not json", key=None))["value"] is None
    assert filter_document(_record(None, key=None))["key"] is None


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        ("value.type == 'order.created'", True),
        ("value.type == 'order.paid'", False),
        ("headers.event_id == 'e-1' && starts_with(key, 'acme:')", True),
        ("value.data.total", True),  # 0 is true in JMESPath
        ("value.data.missing", False),  # null
        ("value.tags", False),
        ("`[]`", False),
        ("`{}`", False),
        ("''", False),
        ("offset >= `7` && partition == `1`", True),
    ],
)
def test_filter_uses_jmespath_truth(expression: str, matches: bool) -> None:
    record = _record({"type": "order.created", "data": {"total": 0}})
    assert RecordFilter.compile(expression).matches(record) is matches


def test_filter_errors_name_the_expression_or_the_message() -> None:
    with pytest.raises(FilterError, match=r"invalid JMESPath filter 'value\.\['"):
        RecordFilter.compile("value.[")
    failing = RecordFilter.compile("contains(value.data.total, 'x')")
    with pytest.raises(FilterError, match=r"shopbotly.raw-events.v1/1/7"):
        failing.matches(_record({"data": {"total": 3}}))


def test_record_header_is_the_last_value_or_none() -> None:
    record = _record({})
    assert record.header("tenant") == "acme2"
    assert record.header("trace_id") is None
    assert record.coordinates == "shopbotly.raw-events.v1/1/7"
