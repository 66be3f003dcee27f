"""SPEC 8 rendering profiles: exact bodies and headers, caller-set fields, overwrite."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.client import render

HINTS = {
    "osl": 512,
    "iat": 250,
    "priority": 2,  # SPEC 5: scale - level, lower = more urgent
    "latency_sensitivity": 3.0,  # the level L: Dynamo's priority, higher = more important
    "prefix_id": "planner-d1",
    "total_requests": 4,
}


def body() -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


# --- dynamo ------------------------------------------------------------------------------------


def test_dynamo_writes_osl_and_the_level_as_priority() -> None:
    b = body()
    out = render("dynamo", HINTS, b, {})
    assert out.body_changed
    assert b == body() | {"nvext": {"agent_hints": {"osl": 512, "priority": 3}}}
    assert list(b["nvext"]["agent_hints"]) == ["osl", "priority"]
    assert out.headers == {"x-dynamo-request-priority": "3"}


def test_dynamo_priority_is_the_level_not_spec5_priority() -> None:
    urgent = HINTS | {"latency_sensitivity": 5.0, "priority": 0}
    relaxed = HINTS | {"latency_sensitivity": 1.0, "priority": 4}
    b_urgent, b_relaxed = body(), body()
    render("dynamo", urgent, b_urgent, {})
    render("dynamo", relaxed, b_relaxed, {})
    # higher = more important in Dynamo >= 1.1: the more latency-sensitive call ranks higher
    assert b_urgent["nvext"]["agent_hints"]["priority"] == 5
    assert b_relaxed["nvext"]["agent_hints"]["priority"] == 1


def test_dynamo_omits_osl_when_zero_and_priority_when_level_zero() -> None:
    b = body()
    out = render("dynamo", HINTS | {"osl": 0}, b, {})
    assert b["nvext"] == {"agent_hints": {"priority": 3}}
    b = body()
    out = render("dynamo", HINTS | {"latency_sensitivity": 0.0}, b, {})
    assert b["nvext"] == {"agent_hints": {"osl": 512}}
    assert out.headers == {}
    b = body()
    out = render("dynamo", HINTS | {"osl": 0, "latency_sensitivity": 0.0}, b, {})
    assert b == body() and not out.body_changed and out.headers == {}


def test_dynamo_writes_only_fields_dynamo_accepts() -> None:
    b = body()
    render("dynamo", HINTS, b, {})
    accepted = {"priority", "strict_priority", "osl", "speculative_prefill", "latency_sensitivity"}
    assert set(b["nvext"]["agent_hints"]) <= accepted


def test_dynamo_caller_fields_win_and_other_nvext_fields_stay() -> None:
    b = body() | {"nvext": {"agent_hints": {"osl": 9, "strict_priority": 1}, "greed": True}}
    out = render("dynamo", HINTS, b, {})
    assert b["nvext"] == {
        "agent_hints": {"osl": 9, "strict_priority": 1, "priority": 3},
        "greed": True,
    }
    assert out.headers == {"x-dynamo-request-priority": "3"}


@pytest.mark.parametrize(
    ("caller_hints", "caller_headers"),
    [
        ({"priority": 7}, {}),
        ({"latency_sensitivity": 0.5}, {}),  # Dynamo's deprecated alias of priority
        ({}, {"X-Dynamo-Request-Priority": "7"}),
    ],
)
def test_dynamo_caller_priority_in_any_form_wins(
    caller_hints: dict[str, Any], caller_headers: dict[str, str]
) -> None:
    b = body() | {"nvext": {"agent_hints": dict(caller_hints)}}
    out = render("dynamo", HINTS, b, caller_headers)
    assert b["nvext"]["agent_hints"] == caller_hints | {"osl": 512}
    assert out.headers == {}


def test_dynamo_overwrite_replaces_caller_fields() -> None:
    b = body() | {"nvext": {"agent_hints": {"osl": 9, "priority": 7}}}
    out = render("dynamo", HINTS, b, {"x-dynamo-request-priority": "7"}, overwrite=True)
    assert b["nvext"]["agent_hints"] == {"osl": 512, "priority": 3}
    assert out.headers == {"x-dynamo-request-priority": "3"}


def test_dynamo_leaves_a_non_object_nvext_alone() -> None:
    b = body() | {"nvext": "caller's"}
    out = render("dynamo", HINTS, b, {}, overwrite=True)
    assert b["nvext"] == "caller's" and not out.body_changed
    b = body() | {"nvext": {"agent_hints": [1]}}
    render("dynamo", HINTS, b, {})
    assert b["nvext"] == {"agent_hints": [1]}


def test_level_rounds_halves_away_from_zero() -> None:
    b = body()
    render("dynamo", HINTS | {"latency_sensitivity": 2.5}, b, {})
    assert b["nvext"]["agent_hints"]["priority"] == 3


# --- nemo-relay ----------------------------------------------------------------------------------


def test_nemo_relay_writes_the_six_fields_and_the_same_json_header() -> None:
    b = body()
    out = render("nemo-relay", HINTS, b, {})
    assert b["nvext"]["agent_hints"] == HINTS
    assert list(b["nvext"]["agent_hints"]) == list(HINTS)
    header = out.headers["x-nemo-relay-adaptive-agent-hints"]
    assert json.loads(header) == b["nvext"]["agent_hints"]
    assert header == (
        '{"osl":512,"iat":250,"priority":2,"latency_sensitivity":3.0,'
        '"prefix_id":"planner-d1","total_requests":4}'
    )


def test_nemo_relay_caller_fields_win_in_body_and_header() -> None:
    b = body() | {"nvext": {"agent_hints": {"osl": 9}}}
    out = render("nemo-relay", HINTS, b, {})
    assert b["nvext"]["agent_hints"] == {**HINTS, "osl": 9}
    assert json.loads(out.headers["x-nemo-relay-adaptive-agent-hints"])["osl"] == 9
    out = render("nemo-relay", HINTS, body(), {"X-Nemo-Relay-Adaptive-Agent-Hints": "{}"})
    assert out.headers == {}


def test_nemo_relay_overwrite() -> None:
    b = body() | {"nvext": {"agent_hints": {"osl": 9}}}
    out = render(
        "nemo-relay", HINTS, b, {"x-nemo-relay-adaptive-agent-hints": "{}"}, overwrite=True
    )
    assert b["nvext"]["agent_hints"] == HINTS
    assert json.loads(out.headers["x-nemo-relay-adaptive-agent-hints"]) == HINTS


def test_nemo_relay_latency_sensitivity_is_a_float() -> None:
    b = body()
    render("nemo-relay", HINTS | {"latency_sensitivity": 2}, b, {})
    assert b["nvext"]["agent_hints"]["latency_sensitivity"] == 2.0
    assert isinstance(b["nvext"]["agent_hints"]["latency_sensitivity"], float)


# --- nat-headers -------------------------------------------------------------------------------


def test_nat_headers_are_decimal_values_and_leave_the_body() -> None:
    b = body()
    out = render("nat-headers", HINTS, b, {})
    assert b == body() and not out.body_changed
    assert out.headers == {
        "x-prefix-id": "planner-d1",
        "x-prefix-total-requests": "4",
        "x-prefix-osl": "512",
        "x-prefix-iat": "250",
        "x-prefix-latency-sensitivity": "3",
    }


def test_nat_headers_caller_headers_win_unless_overwrite() -> None:
    caller = {"X-Prefix-Osl": "1", "x-prefix-id": "mine"}
    out = render("nat-headers", HINTS, None, caller)
    assert "x-prefix-osl" not in out.headers and "x-prefix-id" not in out.headers
    assert out.headers["x-prefix-iat"] == "250"
    out = render("nat-headers", HINTS, None, caller, overwrite=True)
    assert out.headers["x-prefix-osl"] == "512" and out.headers["x-prefix-id"] == "planner-d1"


# --- all ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["dynamo", "nemo-relay", "nat-headers"])
def test_no_hints_change_nothing(profile: str) -> None:
    b = body()
    out = render(profile, None, b, {})  # type: ignore[arg-type]
    assert b == body() and not out.body_changed and out.headers == {}


def test_headers_only_without_a_body() -> None:
    assert render("dynamo", HINTS, None, {}).headers == {"x-dynamo-request-priority": "3"}
    nemo = render("nemo-relay", HINTS, None, {}).headers
    assert json.loads(nemo["x-nemo-relay-adaptive-agent-hints"]) == HINTS


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown profile 'triton'"):
        render("triton", HINTS, body(), {})  # type: ignore[arg-type]
