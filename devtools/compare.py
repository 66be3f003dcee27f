"""SPEC section 7 comparison of learned output with expected output.

`generated_at`/`updated_at` are ignored, floats compare to 1e-9 relative, and percentiles
of statistics with more than 100 samples (and `osl`, derived from one) within SPEC
section 5's bound: 2% relative or 1.0 absolute.
"""

from __future__ import annotations

import math
from typing import Any

IGNORED = {"generated_at", "updated_at"}
EXACT_LIMIT = 100


def within_digest_bound(got: float, want: float, slack: float = 0.0) -> bool:
    return abs(got - want) <= max(0.02 * abs(want), 1.0) + slack


def assert_matches(got: Any, want: Any, path: str = "") -> None:
    """Raise AssertionError naming the first differing path."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: expected an object, got {got!r}"
        assert set(got) - IGNORED == set(want) - IGNORED, (
            f"{path}: keys {sorted(set(got) - IGNORED)} != {sorted(set(want) - IGNORED)}"
        )
        approximate = want.get("sample_count", 0) > EXACT_LIMIT
        for key in set(want) - IGNORED:
            where = f"{path}/{key}"
            if approximate and key in ("p50", "p90", "p95"):
                assert within_digest_bound(got[key], want[key]), (
                    f"{where}: {got[key]} vs {want[key]}"
                )
            else:
                assert_matches(got[key], want[key], where)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_matches(g, w, f"{path}[{i}]")
    elif isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, int | float) and math.isclose(
            got, want, rel_tol=1e-9, abs_tol=1e-12
        ), f"{path}: {got!r} != {want!r}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def assert_agent_matches(got: dict[str, Any], want: dict[str, Any]) -> None:
    """One replay line `{"agent_id", "hints", "trie"}` against its expected line."""
    assert got["agent_id"] == want["agent_id"]
    assert_matches(got["trie"], want["trie"], f"{want['agent_id']}/trie")
    got_hints, want_hints = got["hints"], want["hints"]
    if want_hints is None or got_hints is None:
        assert got_hints == want_hints, f"{want['agent_id']}/hints: {got_hints} != {want_hints}"
        return
    tokens = want["trie"]["root"]["predictions_any_index"]["output_tokens"]
    if tokens["sample_count"] > EXACT_LIMIT:  # osl = round(p90 of a digest)
        assert within_digest_bound(got_hints["osl"], want_hints["osl"], slack=1.0), (
            f"{want['agent_id']}/hints/osl: {got_hints['osl']} vs {want_hints['osl']}"
        )
        got_hints = {**got_hints, "osl": want_hints["osl"]}
    assert_matches(got_hints, want_hints, f"{want['agent_id']}/hints")
