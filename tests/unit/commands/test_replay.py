"""The replay CLI: output per agent, bad lines reported and skipped, strict mode, stdin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

GOOD = {
    "id": "00000000-0000-4000-8000-00000000000{n}",
    "agent_id": "{agent}",
    "started_at": "2026-03-31T12:00:00Z",
    "calls": [
        {
            "kind": "llm",
            "name": "a",
            "started_at": "2026-03-31T12:00:00Z",
            "ended_at": "2026-03-31T12:00:01Z",
            "output_tokens": 10,
        },
    ],
}


def good(n: int, agent: str) -> bytes:
    text = orjson.dumps(GOOD).decode().replace("{n}", str(n)).replace("{agent}", agent)
    return text.encode()


def replay(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "replay", *args],
        input=stdin,
        capture_output=True,
        check=False,
    )


def test_bad_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    source = tmp_path / "runs.jsonl"
    lines = [good(1, "zeta"), b"{broken", b"", good(2, "alpha"), b'{"id": 5}', good(1, "zeta")]
    source.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"
    done = replay(str(source), "--rejects", str(rejects))
    assert done.returncode == 0
    agents = [orjson.loads(line)["agent_id"] for line in done.stdout.splitlines()]
    assert agents == ["alpha", "zeta"]
    err = done.stderr.decode()
    assert "line 2: invalid_json" in err
    assert "line 5: schema: id: UUID input should be a string" in err
    assert "agent_id: Field required" in err
    assert "5 records, 2 learned, 1 duplicate, 2 rejected, 2 agents" in err
    rejected = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["reason"], r["raw"]) for r in rejected] == [
        (2, "invalid_json", "{broken"),
        (5, "schema", '{"id": 5}'),
    ]


def test_strict_makes_rejects_an_error() -> None:
    assert replay("-", "--strict", stdin=good(1, "a") + b"\nnope\n").returncode == 1
    assert replay("-", "--strict", stdin=good(1, "a") + b"\n").returncode == 0


def test_stdin_and_semantics_flag() -> None:
    done = replay("-", "--semantics", "nemo-flow", stdin=good(1, "solo"))
    line = orjson.loads(done.stdout)
    assert line["hints"]["osl"] == 10
    assert line["trie"]["workflow_name"] == "solo"
    assert "(nemo-flow)" in done.stderr.decode()


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    done = replay(str(tmp_path / "nope.jsonl"))
    assert done.returncode == 2
    assert "cannot read" in done.stderr.decode()


def test_bad_weight_is_a_clear_error() -> None:
    done = replay("-", "--weight", "speed=1", stdin=b"")
    assert done.returncode != 0
    assert "--weight" in done.stderr.decode()


def test_replay_applies_the_workers_limits_from_the_same_settings(tmp_path: Path) -> None:
    """The worker rejects these as too_large / limits; replay must too (same settings)."""
    many_calls = orjson.loads(good(3, "busy"))
    tool = {"kind": "tool", "name": "t", "started_at": "2026-03-31T12:00:00Z"}
    many_calls["calls"] = [tool] * 10_001  # ~600 KB: under the size limit
    big = orjson.loads(good(4, "big"))
    big["calls"][0]["annotated_request"] = {"prompt": "x" * 1_048_576}
    lines = [
        good(1, "ok"),
        good(2, "n" * 10_000),
        orjson.dumps(many_calls),
        orjson.dumps(big),
    ]
    source = tmp_path / "runs.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    done = replay(str(source))
    assert done.returncode == 0
    err = done.stderr.decode()
    assert "line 2: limits: agent_id is 10000 characters, limit max_name_length is 256" in err
    assert "line 3: limits: run has 10001 calls, limit max_calls_per_run is 10000" in err
    assert "line 4: too_large: record is" in err
    assert [orjson.loads(line)["agent_id"] for line in done.stdout.splitlines()] == ["ok"]
    # the same limits from a settings file, as the worker would read it
    config = tmp_path / "w.toml"
    config.write_text("[limits]\nmax_name_length = 20000\n")
    relaxed = replay(str(source), "--config", str(config))
    agents = [orjson.loads(line)["agent_id"] for line in relaxed.stdout.splitlines()]
    assert agents == ["n" * 10_000, "ok"]
