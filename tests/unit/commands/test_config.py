"""`python -m worker config`: the effective settings, their sources, secrets masked."""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

import pytest

from worker.cli import main
from worker.commands import config
from worker.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WORKER_"):
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    assert config.run(parser.parse_args(list(argv))) == 0
    return capsys.readouterr().out


def test_each_value_names_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    own = tmp_path / "own.toml"
    own.write_text('group_id = "from-file"\n[learner]\nscale = 7\n')
    monkeypatch.setenv("WORKER_METRICS_PORT", "9999")
    monkeypatch.setenv("WORKER_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("WORKER_KAFKA__SASL_USERNAME", "worker")
    monkeypatch.setenv("WORKER_KAFKA__SASL_PASSWORD", "hunter2")
    out = run(capsys, "--config", str(own), "--set", "limits.max_calls_per_run=5")
    lines = out.splitlines()
    assert f'group_id = "from-file"  # file {own}' in lines
    assert "scale = 7  # file " + str(own) in lines
    assert "metrics_port = 9999  # env WORKER_METRICS_PORT" in lines
    assert "max_calls_per_run = 5  # flag" in lines
    assert 'semantics = "corrected"  # default' in lines
    assert "hunter2" not in out
    assert 'sasl_password = "**********"  # env WORKER_KAFKA__SASL_PASSWORD' in lines


def test_the_output_is_a_settings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "--set", "topics.runs=r", "--bootstrap-servers", "b:1")
    written = tmp_path / "effective.toml"
    written.write_text(out)
    tomllib.loads(out)  # valid TOML
    again = load_settings(written)
    assert again == load_settings(overrides={"topics.runs": "r", "bootstrap_servers": "b:1"})


def test_a_bad_setting_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "metrics_port=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m worker config: invalid settings:")
    assert "setting metrics_port (env WORKER_METRICS_PORT)" in err
