"""The replay CLI: output per agent, bad lines reported and skipped, strict mode, stdin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from worker.demo_workload import generate_runs

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


def _generated(tmp_path: Path, runs: int, agents: int) -> Path:
    source = tmp_path / "runs.jsonl"
    start = 1_780_000_000_000_000_000
    lines = [orjson.dumps(r) for r in generate_runs(runs, agents, seed=5, start_ns=start)]
    source.write_bytes(b"\n".join(lines) + b"\n")
    return source


SCORES = {"scored", "osl_coverage", "osl_mae", "osl_tau", "iat_mae_ms", "remaining_mae"}


def test_evaluate_json_has_exactly_the_spec10_keys(tmp_path: Path) -> None:
    source = _generated(tmp_path, 60, 3)
    done = replay(str(source), "--evaluate", "--json", "--semantics", "nemo-flow")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert set(report) == {
        "semantics",
        "runs",
        "calls",
        "served",
        "sources",
        "scored",
        "osl_coverage",
        "osl_mae",
        "osl_tau",
        "iat_mae_ms",
        "remaining_mae",
        "level_flips_per_100_runs",
        "baselines",
    }
    assert report["semantics"] == "nemo-flow" and report["runs"] == 60
    assert set(report["sources"]) == {"trie", "agent_default", "none"}
    assert sum(report["sources"].values()) == report["calls"]
    assert report["scored"] == report["sources"]["trie"] + report["sources"]["agent_default"]
    assert set(report["baselines"]) == {"fleet", "agent_default", "corrected"}
    for baseline in report["baselines"].values():
        assert set(baseline) == SCORES
    # the first run of each of the 3 agents is served nothing; fleet-wide only the first
    first_runs = report["calls"] - report["scored"]
    assert report["baselines"]["fleet"]["scored"] > report["scored"] > 0 < first_runs


def test_evaluate_under_adaptive_counts_the_prior_source_beside_corrected(tmp_path: Path) -> None:
    source = _generated(tmp_path, 60, 3)
    done = replay(str(source), "--evaluate", "--json", "--semantics", "adaptive")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["semantics"] == "adaptive"
    assert set(report["sources"]) == {"trie", "agent_default", "prior", "none"}
    assert sum(report["sources"].values()) == report["calls"]
    assert set(report["baselines"]) == {"fleet", "agent_default", "corrected"}
    lines = replay(str(source), "--semantics", "adaptive").stdout.splitlines()
    trie = orjson.loads(lines[0])["trie"]
    assert all("model" in node for node in trie["root"]["children"].values())


def test_evaluate_prints_a_table_with_ours_and_each_baseline(tmp_path: Path) -> None:
    source = _generated(tmp_path, 30, 2)
    done = replay(str(source), "--evaluate")
    assert done.returncode == 0, done.stderr
    rows = done.stdout.decode().splitlines()
    assert "30 runs" in rows[0]
    assert "osl coverage" in rows[2] and "tau" in rows[2] and "flips/100 runs" in rows[2]
    labels = [row.split()[0] for row in rows[3:7]]
    assert labels == ["ours", "fleet", "agent_default", "nemo-flow"]
    assert replay(str(source), "--json").returncode == 2  # --json goes with --evaluate


def test_replay_lines_carry_the_agents_recent_accuracy_once_scored(tmp_path: Path) -> None:
    source = tmp_path / "runs.jsonl"
    source.write_bytes(good(1, "solo") + b"\n" + good(2, "solo") + b"\n" + good(3, "new") + b"\n")
    lines = [orjson.loads(line) for line in replay(str(source)).stdout.splitlines()]
    by_agent = {line["agent_id"]: line for line in lines}
    assert "accuracy" not in by_agent["new"]  # its one run was scored against nothing
    # solo's second run: 10 tokens against osl 10, p50 10
    assert by_agent["solo"]["accuracy"] == {"scored": 1, "osl_coverage": 1.0, "osl_mae": 0.0}
