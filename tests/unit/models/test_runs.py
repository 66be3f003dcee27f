"""RunRecord parsing: serde's JSON, unknown fields ignored, errors that name the field."""

from __future__ import annotations

import json

import orjson
import pytest

from worker.errors import RecordError
from worker.models import CallRecord, parse_run
from worker.models.timestamps import format_timestamp_ns, parse_timestamp_ns

GOOD = {
    "id": "00000000-0000-4000-8000-000000000001",
    "agent_id": "planner",
    "started_at": "2026-03-31T12:00:00Z",
    "calls": [
        {
            "kind": "llm",
            "name": "gpt-4",
            "started_at": "2026-03-31T12:00:00.5+02:00",
            "ended_at": None,
            "output_tokens": 12,
            "future_field": [1, 2],
        }
    ],
    "something_new": True,
}


def with_call(**changes):
    return orjson.dumps({**GOOD, "calls": [{**GOOD["calls"][0], **changes}]})


def test_good_record_parses_and_ignores_unknown_fields() -> None:
    run = parse_run(orjson.dumps(GOOD))
    assert run.agent_id == "planner"
    assert run.ended_at is None and run.calls[0].ended_at is None
    assert run.calls[0].started_at == parse_timestamp_ns("2026-03-31T10:00:00.5Z")


@pytest.mark.parametrize(
    ("data", "reason", "where"),
    [
        (b"{not json", "invalid_json", "Invalid JSON"),
        (b"[1, 2]", "schema", "expected a JSON object"),
        (orjson.dumps({**GOOD, "id": "nope"}), "schema", "id:"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "agent_id"}), "schema", "agent_id:"),
        (with_call(kind="embedding"), "schema", "calls.0.kind"),
        (with_call(output_tokens=-1), "schema", "calls.0.output_tokens"),
        (with_call(output_tokens=2**32), "schema", "calls.0.output_tokens"),
        (with_call(output_tokens="12"), "schema", "calls.0.output_tokens"),
        (with_call(started_at="2026-03-31T12:00:00"), "schema", "calls.0.started_at"),
        (with_call(started_at="yesterday"), "schema", "calls.0.started_at"),
    ],
)
def test_bad_records_name_the_problem(data: bytes, reason: str, where: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_run(data)
    assert caught.value.reason == reason
    assert where in caught.value.detail


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:01.000000001Z", 1_000_000_001),
        ("1970-01-01T00:00:00.123456789+00:00", 123_456_789),
        ("1970-01-01T01:00:00.5+01:00", 500_000_000),
        ("1970-01-01t00:00:00.25z", 250_000_000),
    ],
)
def test_timestamps_keep_nanoseconds(text: str, ns: int) -> None:
    assert parse_timestamp_ns(text) == ns
    assert parse_timestamp_ns(format_timestamp_ns(ns)) == ns


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-31T12:00:61Z",
        "2026-03-31T12:00:1Z",
        "2026-03-31T12:00:10.Z",
        "2026-03-31T12:00:10.1234567890Z",
        "2026-03-31T12:00:1x.5Z",
        "2026-03-31T12:00:10.5",
        "2026-03-31T12:00:10.5+0000",
    ],
)
def test_fast_path_rejects_what_the_general_parser_rejects(text: str) -> None:
    parse_timestamp_ns("2026-03-31T12:00:00Z")  # the minute is now known to the fast path
    with pytest.raises(ValueError):
        parse_timestamp_ns(text)


def test_fast_path_agrees_with_general_parser() -> None:
    first = parse_timestamp_ns("2026-03-31T12:00:00.5+00:00")
    assert parse_timestamp_ns("2026-03-31T12:00:00.500Z") == first
    assert parse_timestamp_ns("2026-03-31T12:00:59.999999999Z") == first + 59_499_999_999
    assert parse_timestamp_ns("2026-03-31T14:00:00.5+02:00") == first


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        ({**GOOD, "agent_id": "a\nb"}, "agent_id: contains a control character (U+000A)"),
        ({**GOOD, "agent_id": "a\x7f"}, "agent_id: contains a control character (U+007F)"),
        (
            {**GOOD, "calls": [{**GOOD["calls"][0], "name": "tab\there"}]},
            "calls.0.name: contains a control character (U+0009)",
        ),
        (
            {**GOOD, "ended_at": "2026-03-31T11:59:59.999999999Z"},
            "record: ended_at 2026-03-31T11:59:59.999999999Z is before started_at",
        ),
        (
            {**GOOD, "calls": [{**GOOD["calls"][0], "ended_at": "2026-03-31T10:00:00.4Z"}]},
            "calls.0: ended_at 2026-03-31T10:00:00.400000000Z is before started_at",
        ),
        ({**GOOD, "calls": [None]}, "calls.0: expected a JSON object"),
        ({**GOOD, "calls": [7]}, "calls.0: expected a JSON object"),
    ],
)
def test_spec_2_schema_rejections_say_what_is_wrong(record: dict, detail: str) -> None:
    with pytest.raises(RecordError) as info:
        parse_run(orjson.dumps(record))
    assert info.value.reason == "schema"
    assert info.value.detail.startswith(detail), info.value.detail


def test_a_call_ending_as_it_starts_is_fine() -> None:
    same = "2026-03-31T10:00:00.5Z"
    assert parse_run(with_call(ended_at=same)).calls[0].ended_at == parse_timestamp_ns(same)


@pytest.mark.parametrize("number", [10**30, -(10**30), 10**22, 1_700_000_000_000_000_000])
def test_a_number_for_a_timestamp_is_a_schema_error(number: int) -> None:
    """SPEC 2: timestamps are RFC 3339 text; a JSON number (any size) is refused."""
    record = {**GOOD, "calls": [{**GOOD["calls"][0], "started_at": number + 1}]}
    with pytest.raises(RecordError) as info:
        parse_run(json.dumps(record))  # orjson stops at 64-bit integers
    assert info.value.reason == "schema"
    assert "calls.0.started_at: timestamp must be an RFC 3339 string" in info.value.detail


def test_a_record_built_in_code_may_give_integer_nanoseconds() -> None:
    call = CallRecord(kind="llm", name="a", started_at=10**22 + 1, ended_at=10**22 + 5)
    assert call.ended_at == 10**22 + 5
    with pytest.raises(ValueError, match=r"ended_at .* is before started_at"):
        CallRecord(kind="llm", name="a", started_at=10**22 + 1, ended_at=10**22)


@pytest.mark.parametrize("value", [1.5, None, [1], {"s": 1}, b"2026-03-31T12:00:00Z", True])
def test_a_timestamp_of_another_type_is_a_value_error(value: object) -> None:
    """The compiled parser (mypyc) checks its argument's type itself: any type is a
    ValueError, which every caller turns into its own clear error, never a TypeError."""
    with pytest.raises(ValueError, match="timestamp must be an RFC 3339 string"):
        parse_timestamp_ns(value)


def test_a_record_built_in_code_with_a_float_timestamp_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="timestamp must be an RFC 3339 string"):
        CallRecord(kind="llm", name="a", started_at=1.5, ended_at=2.5)  # type: ignore[arg-type]
