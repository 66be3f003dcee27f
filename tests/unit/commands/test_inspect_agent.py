"""The inspect tree renderer, on the tries of the basic test vector."""

from __future__ import annotations

import json
from typing import Any

from devtools.vectors import VECTORS
from worker.commands.inspect_agent import format_hints, format_prediction, render, render_trie

BASIC = VECTORS / "basic.expected.jsonl"


def _expected() -> dict[str, dict[str, Any]]:
    assert BASIC.exists(), f"{BASIC} not found: the test vectors are part of the repository"
    rows = [json.loads(line) for line in BASIC.read_text().splitlines() if line.strip()]
    return {row["agent_id"]: row for row in rows}


def test_tree_lists_nodes_predictions_and_children_in_order() -> None:
    trie = _expected()["planner"]["trie"]
    lines = render_trie(trie).splitlines()
    assert lines[0] == "root"
    # root's own predictions first (any, then call indices numerically), then children by name
    labels = [line.split()[1] for line in lines[1:]]
    assert labels[:3] == ["any", "#1", "#2"]
    assert lines[4] == "├── critic"
    assert lines[7] == "└── gpt-4"
    assert lines[5].startswith("│   ├── any ")
    assert lines[6].startswith("│   └── #1 ")
    assert lines[8].startswith("    ├── any ")
    assert lines[-1].startswith("    └── #2 ")


def test_prediction_line_shows_counts_means_p90_and_sensitivity() -> None:
    prediction = _expected()["planner"]["trie"]["root"]["children"]["gpt-4"][
        "predictions_by_call_index"
    ]["1"]
    line = format_prediction("#1", prediction)
    # gpt-4 call #1: 3 samples; output tokens mean 161.33 p90 264; iat mean 816.67 p90 1110
    assert "n=3" in line
    assert "out 161.3/264" in line
    assert "iat 816.7/1110ms" in line
    assert "remaining 1.7/2" in line
    assert line.endswith("sens 5")


def test_missing_statistics_and_sensitivity_render_as_dash() -> None:
    zeros = {"sample_count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p95": 0.0}
    some = {"sample_count": 2, "mean": 1500.0, "p50": 1500.0, "p90": 1900.0, "p95": 1950.0}
    prediction = {
        "remaining_calls": some,
        "interarrival_ms": zeros,
        "output_tokens": some,
        "latency_sensitivity": None,
    }
    line = format_prediction("any", prediction)
    assert "iat -" in line
    assert line.endswith("sens -")


def test_names_with_slashes_are_single_nodes() -> None:
    text = render_trie(_expected()["solo"]["trie"])
    assert "├── openai/gpt-4o" in text.splitlines()


def test_bare_root_node_and_empty_trie() -> None:
    root = _expected()["toolbox"]["trie"]["root"]
    assert render_trie(root) == "root"


def test_full_report_has_hints_runs_and_tree() -> None:
    row = _expected()["planner"]
    record = {"agent_id": "planner", "hints": row["hints"], "runs": 3, "updated_at": "T"}
    text = render("planner", record, row["trie"])
    assert "osl=360 iat=760 priority=2 latency_sensitivity=3.0 total_requests=2" in text
    assert "learned from 3 runs, updated T" in text
    assert "\nroot\n" in text
    assert "recent accuracy" not in text  # nothing scored yet
    record["accuracy"] = {"scored": 12, "osl_coverage": 0.75, "osl_mae": 40.25}
    text = render("planner", record, row["trie"])
    assert "recent accuracy: osl coverage 0.75, osl MAE 40.2 tokens, over its last 12" in text


def test_report_without_records() -> None:
    text = render("x", None, None)
    assert "hints: (none published)" in text
    assert "trie: (none published)" in text
    assert format_hints({"hints": {}}) == ""
