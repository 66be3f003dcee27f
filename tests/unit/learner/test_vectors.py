"""Every test vector in tests/vectors, through the replay CLI, in both semantics (SPEC 7)."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from devtools.compare import assert_agent_matches
from devtools.vectors import VECTORS

CASES = [
    (runs.name.removesuffix(".runs.jsonl"), semantics)
    for runs in sorted(VECTORS.glob("*.runs.jsonl"))
    for semantics in ("corrected", "nemo-flow")
] or [("missing", "corrected")]  # no vectors must fail, not skip


def test_vectors_are_present() -> None:
    assert len(CASES) >= 4, f"no vectors found in {VECTORS}"


@pytest.mark.parametrize(("name", "semantics"), CASES)
def test_replay_cli_gives_expected_output(name: str, semantics: str) -> None:
    suffix = "" if semantics == "corrected" else ".nemo-flow"
    expected = [
        orjson.loads(line)
        for line in (VECTORS / f"{name}{suffix}.expected.jsonl").read_bytes().splitlines()
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "replay",
            str(VECTORS / f"{name}.runs.jsonl"),
            "--semantics",
            semantics,
            "--strict",
        ],
        capture_output=True,
        check=True,
    )
    got = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [g["agent_id"] for g in got] == [e["agent_id"] for e in expected]
    for got_line, want_line in zip(got, expected, strict=True):
        assert_agent_matches(got_line, want_line)
