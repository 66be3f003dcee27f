"""The Helm chart lints and renders, and what it renders agrees with the worker's settings.

`helm template` with the default values and with non-default ones; the rendered probes,
ports, env, state volume and security context are parsed and compared with
`worker.settings` (every WORKER_* name must be a setting, and the env must load), the worker's
endpoints and the Dockerfile.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from devtools.deploy_tools import CHART, DOCKERFILE, run_tool
from tests.deploy.dockerfile_reader import parse_dockerfile
from worker.settings import Settings, SettingsError, load_settings

NON_DEFAULT = {
    "replicaCount": 3,
    "staticMembership": False,
    "metricsPort": 9500,
    "stateVolume": {"mountPath": "/data/hints", "size": "1Gi", "storageClassName": "fast"},
    "env": {
        "WORKER_BOOTSTRAP_SERVERS": "kafka-0:9093,kafka-1:9093",
        "WORKER_LIMITS__MAX_CALLS_PER_RUN": "500",
        "WORKER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "WORKER_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "WORKER_KAFKA__SASL_USERNAME": "hints",
    },
    "secretEnvFrom": "agent-hints-kafka",
    "config": 'log_level = "DEBUG"\n\n[learner]\nsemantics = "nemo-flow"\n',
    "podMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}},
    "serviceMonitor": {"enabled": True, "interval": "20s"},
}


def render(helm: Path, tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict]:
    args: list[str | Path] = [helm / "helm", "template", "hints", CHART]
    if values is not None:
        values_file = tmp_path / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        args += ["--values", values_file]
    done = run_tool(*args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def worker_container(docs: list[dict]) -> dict[str, Any]:
    (statefulset,) = by_kind(docs, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def field_env(container: dict[str, Any]) -> dict[str, str]:
    """Env filled from the pod's own fields (downward API): name -> field path."""
    return {
        item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"]
        for item in container["env"]
        if "fieldRef" in item.get("valueFrom", {})
    }


def setting_exists(env_name: str) -> bool:
    """Whether WORKER_A__B names the setting a.b (pydantic-settings' own mapping)."""
    if env_name == "WORKER_CONFIG":  # the settings file, not a setting
        return True
    model: type[BaseModel] = Settings
    parts = env_name.removeprefix("WORKER_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def load_with_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name in [n for n in os.environ if n.startswith("WORKER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def check_agrees_with_settings(
    docs: list[dict], values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = chart_defaults()
    port = values.get("metricsPort", defaults["metricsPort"])
    state_path = values.get("stateVolume", defaults["stateVolume"])["mountPath"]
    (statefulset,) = by_kind(docs, "StatefulSet")
    pod = statefulset["spec"]["template"]
    container = worker_container(docs)
    env = plain_env(container)

    unknown = [name for name in [*env, *field_env(container)] if not setting_exists(name)]
    assert not unknown, f"env names that are no setting: {unknown}"
    static = values.get("staticMembership", defaults["staticMembership"])
    want = {"WORKER_GROUP_INSTANCE_ID": "metadata.name"} if static else {}
    assert field_env(container) == want  # the pod name: stable across restarts, unique
    assert container["args"] == ["run"]

    # ports and probes: the worker's one port
    assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    (service,) = by_kind(docs, "Service")
    assert service["spec"]["ports"][0]["port"] == port
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]

    # state: the claim template mounted where WORKER_STATE_DIR points
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["state"]["mountPath"] == state_path == env["WORKER_STATE_DIR"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    assert "emptyDir" in volumes["tmp"] and mounts["tmp"]["mountPath"] == "/tmp"
    writable = sorted(name for name, m in mounts.items() if not m.get("readOnly"))
    assert writable == ["state", "tmp"]

    # security: non-root as the image's user, read-only root, nothing to escalate with
    user = int(parse_dockerfile(DOCKERFILE)[-1].user()[0])
    pod_security = pod["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == user != 0
    assert pod_security["fsGroup"] == pod_security["runAsGroup"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}

    # the env the chart sets is one the worker loads, with these values
    loadable = {k: v for k, v in env.items() if k != "WORKER_CONFIG"}
    if "envFrom" in container:  # what the Secret holds
        loadable["WORKER_KAFKA__SASL_PASSWORD"] = "from-the-secret"
    settings = load_with_env(monkeypatch, loadable)
    assert settings.metrics_port == port
    assert settings.state_dir == Path(state_path)


@pytest.mark.parametrize("values", [None, NON_DEFAULT], ids=["default", "non-default"])
def test_helm_lint(helm_bin: Path, tmp_path: Path, values: dict[str, Any] | None) -> None:
    args: list[str | Path] = [helm_bin / "helm", "lint", "--strict", CHART]
    if values is not None:
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
        args += ["--values", tmp_path / "values.yaml"]
    done = run_tool(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_default_values_render_a_worker_that_agrees_with_the_settings(
    helm_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(helm_bin, tmp_path)
    assert sorted(doc["kind"] for doc in docs) == ["Service", "StatefulSet"]
    check_agrees_with_settings(docs, {}, monkeypatch)
    # the chart's default port is the worker's, and its state dir the image's
    assert chart_defaults()["metricsPort"] == load_with_env(monkeypatch, {}).metrics_port
    env = plain_env(worker_container(docs))
    assert env["WORKER_STATE_DIR"] == parse_dockerfile(DOCKERFILE)[-1].env()["WORKER_STATE_DIR"]
    assert "envFrom" not in worker_container(docs)


def test_non_default_values_render_consistently(
    helm_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(helm_bin, tmp_path, NON_DEFAULT)
    check_agrees_with_settings(docs, NON_DEFAULT, monkeypatch)
    (statefulset,) = by_kind(docs, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 3
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast"
    assert claim["resources"]["requests"]["storage"] == "1Gi"
    container = worker_container(docs)
    assert container["envFrom"] == [{"secretRef": {"name": "agent-hints-kafka"}}]

    # the operator's settings file: a ConfigMap, mounted read-only, named by WORKER_CONFIG
    (config_map,) = by_kind(docs, "ConfigMap")
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    config_path = plain_env(container)["WORKER_CONFIG"]
    assert mounts["config"]["readOnly"] is True
    assert config_path == f"{mounts['config']['mountPath']}/worker.toml"
    config_file = tmp_path / "worker.toml"
    config_file.write_text(config_map["data"]["worker.toml"])
    settings = load_with_env(
        monkeypatch,
        {"WORKER_CONFIG": str(config_file), "WORKER_LIMITS__MAX_CALLS_PER_RUN": "500"},
    )
    assert settings.log_level == "DEBUG"
    assert settings.learner.semantics == "nemo-flow"
    assert settings.limits.max_calls_per_run == 500

    # Prometheus Operator objects select the worker pods / service on the metrics port
    (pod_monitor,) = by_kind(docs, "PodMonitor")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    assert pod_monitor["metadata"]["labels"]["release"] == "prom"
    (service_monitor,) = by_kind(docs, "ServiceMonitor")
    (service,) = by_kind(docs, "Service")
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service_monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "20s"}
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, 2**30),  # 25% of the default 4Gi: the worker's own default
        ({"resources": {"limits": {"memory": "6144Mi"}}, "stateCachePercent": 20}, 1288490188),
        ({"env": {"WORKER_STATE_CACHE_BYTES": "5000000"}}, 5_000_000),
    ],
    ids=["default", "from-limit", "env-override"],
)
def test_the_state_cache_is_sized_from_the_memory_limit(
    helm_bin: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    values: dict[str, Any],
    expected: int,
) -> None:
    container = worker_container(render(helm_bin, tmp_path, values))
    names = [item["name"] for item in container["env"]]
    assert names.count("WORKER_STATE_CACHE_BYTES") == 1
    env = plain_env(container)
    assert load_with_env(monkeypatch, env).state_cache_bytes == expected
    if not values:
        assert expected == load_with_env(monkeypatch, {}).state_cache_bytes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"env": {"WORKER_STATE_DIR": "/elsewhere"}}, "WORKER_STATE_DIR"),
        ({"resources": {"limits": {"memory": "4G"}}}, "memory"),
        ({"resources": {"limits": None}}, "limits"),
        ({"stateCachePercent": 95}, "stateCachePercent"),
        ({"env": {"BOOTSTRAP": "x"}}, "BOOTSTRAP"),
        ({"metricsPort": 0}, "metricsPort"),
        ({"stateVolume": {"mountPath": "relative", "size": "1Gi"}}, "mountPath"),
    ],
    ids=[
        "state-dir-in-env",
        "memory-not-mi-or-gi",
        "no-memory-limit",
        "state-cache-percent-too-high",
        "not-a-worker-setting",
        "port-zero",
        "relative-state-path",
    ],
)
def test_schema_refuses_values_that_contradict_the_worker(
    helm_bin: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    done = run_tool(
        helm_bin / "helm", "template", "hints", CHART, "--values", tmp_path / "values.yaml"
    )
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_a_wrong_setting_name_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    assert setting_exists("WORKER_LEARNER__SEMANTICS")
    assert setting_exists("WORKER_KAFKA__SASL_USERNAME")
    assert not setting_exists("WORKER_LEARNER__SEMANTIC")
    assert not setting_exists("WORKER_METRICS_PORT__X")
    with pytest.raises(SettingsError, match="metrics_port"):
        load_with_env(monkeypatch, {"WORKER_METRICS_PORT": "not-a-port"})
