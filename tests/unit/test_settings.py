"""Settings: TOML defaults < WORKER_* env < CLI overrides; errors name the setting."""

from __future__ import annotations

import argparse
import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest

from worker.commands.run import add_arguments, settings_from_args
from worker.learner import LearnerConfig, Weights
from worker.settings import DEFAULTS_FILE, Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WORKER_"):
            monkeypatch.delenv(name)


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_shipped_toml_matches_the_model_defaults() -> None:
    """Every value in worker/defaults.toml is the declared default, and every setting is in
    it (commented out where it has no default, like a password)."""
    assert DEFAULTS_FILE.is_file()
    text = DEFAULTS_FILE.read_text()
    in_file = _leaves(tomllib.loads(text))
    declared = _leaves(Settings.model_construct().model_dump(mode="json"))
    for name, value in in_file.items():
        assert declared[name] == value, f"{name}: file {value!r}, declared {declared[name]!r}"
    for name in declared:
        key = name.rsplit(".", 1)[-1]
        assert name in in_file or f"# {key} =" in text, f"{name} is not documented"
    from_file = load_settings(DEFAULTS_FILE)
    assert from_file.topics.runs == "agent-runs"
    assert from_file.topics.hints == "agent-hints"
    assert from_file.topics.tries == "agent-tries"
    assert from_file.topics.dlq == "agent-runs.dlq"
    assert from_file.learner.semantics == "corrected"


def test_precedence_file_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "w.toml"
    config.write_text('group_id = "from-file"\nmetrics_port = 1\n[learner]\nscale = 7\n')
    monkeypatch.setenv("WORKER_METRICS_PORT", "2")
    monkeypatch.setenv("WORKER_LEARNER__SEMANTICS", "nemo-flow")
    monkeypatch.setenv("WORKER_BOOTSTRAP_SERVERS", "env:9092")
    s = parse("--config", str(config), "--bootstrap-servers", "cli:9092")
    assert s.group_id == "from-file"
    assert s.metrics_port == 2
    assert s.learner.scale == 7  # nested TOML merged with nested env
    assert s.learner.semantics == "nemo-flow"
    assert s.bootstrap_servers == "cli:9092"
    assert s.bootstrap_list() == ["cli:9092"]


def test_interface_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_GROUP_ID", "g")
    monkeypatch.setenv("WORKER_STATE_DIR", "/tmp/x")
    monkeypatch.setenv("WORKER_METRICS_PORT", "9999")
    s = parse()
    assert (s.group_id, str(s.state_dir), s.metrics_port) == ("g", "/tmp/x", 9999)


def test_set_flag_and_learner_config() -> None:
    s = parse("--set", "limits.max_calls_per_run=5", "--set", "learner.weights.parallel=0.1")
    assert s.limits.max_calls_per_run == 5
    config = s.learner
    assert config == LearnerConfig(weights=Weights(parallel=0.1))  # what replay learns with


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("WORKER_METRICS_PORT", "70000", "metrics_port (env WORKER_METRICS_PORT)"),
        ("WORKER_LEARNER__SEMANTICS", "wrong", "learner.semantics"),
        ("WORKER_LIMITS__MAX_RECORD_BYTES", "0", "limits.max_record_bytes"),
        ("WORKER_PROCESSING_GUARANTEE", "maybe", "processing_guarantee"),
    ],
)
def test_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match="setting ") as info:
        load_settings()
    assert named in str(info.value)


def test_unknown_setting_is_named() -> None:
    with pytest.raises(SettingsError, match=r"limits\.nope"):
        parse("--set", "limits.nope=1")


def test_missing_config_file() -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings("/nonexistent/worker.toml")


def test_sasl_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(SettingsError, match="sasl_username"):
        load_settings()


def test_secret_from_file_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-value\n")
    monkeypatch.setenv("WORKER_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("WORKER_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("WORKER_KAFKA__SASL_USERNAME", "worker")
    monkeypatch.setenv("WORKER_KAFKA__SASL_PASSWORD_FILE", str(secret))
    s = load_settings()
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "s3cr3t-value"
    logging.getLogger("t").info("settings", extra={"settings": s.redacted()})
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.redacted())
    assert "s3cr3t" not in caplog.text

    from worker.kafka.clients import client_kwargs

    kwargs = client_kwargs(s.bootstrap_servers, s.kafka)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "s3cr3t-value"


def test_unreadable_secret_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_KAFKA__SASL_PASSWORD_FILE", "/nonexistent/pw")
    with pytest.raises(SettingsError, match="sasl_password_file"):
        load_settings()


def test_rekey_topic_default() -> None:
    s = load_settings()
    assert s.topics.rekey_topic == "agent-runs.rekey"


def test_example_config_names_only_real_settings() -> None:
    """config/secure-cluster.example.toml: every key is a setting (its files are examples)."""
    example = DEFAULTS_FILE.parents[1] / "config" / "secure-cluster.example.toml"
    declared = _leaves(Settings.model_construct().model_dump(mode="json"))
    names = _leaves(tomllib.loads(example.read_text()))
    assert names and set(names) <= set(declared), set(names) - set(declared)
