"""Recorded timestamps: RFC 3339, UTC, `Z`, nine fraction digits, exact to the nanosecond."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.models.timestamps import format_timestamp_ns, parse_timestamp_ns
from worker.recorder.timestamps import MAX_NS, to_ns

SHAPE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


@given(st.integers(min_value=0, max_value=MAX_NS))
def test_format_round_trips_through_the_workers_parser(ns: int) -> None:
    text = format_timestamp_ns(ns)
    assert SHAPE.fullmatch(text), text
    assert parse_timestamp_ns(text) == ns


def test_known_value() -> None:
    assert format_timestamp_ns(1_764_242_363_423_395_280) == "2025-11-27T11:19:23.423395280Z"
    assert format_timestamp_ns(0) == "1970-01-01T00:00:00.000000000Z"


def test_aware_datetimes_convert_exactly() -> None:
    moment = datetime(2026, 3, 31, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert to_ns(moment) == parse_timestamp_ns("2026-03-31T12:00:00.123456Z")
    assert to_ns(datetime(2026, 1, 1, tzinfo=UTC)) == parse_timestamp_ns("2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (datetime(2026, 1, 1), "needs a timezone"),
        (1.5, "got float"),
        (True, "got bool"),
        ("2026-01-01T00:00:00Z", "got str"),
        (-1, "outside"),
        (MAX_NS + 1, "outside"),
    ],
)
def test_bad_timestamps_get_a_clear_error(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        to_ns(value, "started_at")  # type: ignore[arg-type]
    assert str(caught.value).startswith("started_at")
