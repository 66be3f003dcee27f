"""The Dockerfile cannot go stale: parsed, it agrees with the settings, the chart and the tests.

No image is built here (no Docker engine): what the image would do is read from the file and
compared with what the worker, the Helm chart's values and the Makefile's install use.
test_prometheus_live.py also runs a worker with the final stage's environment on a read-only
root filesystem.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from devtools.deploy_tools import CHART, DOCKERFILE, REPO_ROOT
from tests.deploy.dockerfile_reader import Stage, logical_lines, parse_dockerfile
from worker.settings import load_settings


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def pip_install_targets(stage: Stage) -> list[str]:
    """The requirement arguments of every `pip install` in the stage's RUN lines."""
    found = []
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install":
                found += [w for w in words[2:] if not w.startswith("-")]
    return found


def extras(target: str) -> set[str]:
    found = re.fullmatch(r"\.(?:\[([\w,\s-]*)\])?", target)
    assert found, f"not an install of the local package: {target}"
    return {e.strip() for e in (found.group(1) or "").split(",") if e.strip()}


def test_installs_the_package_as_the_tests_do_without_dev_tools(stages: list[Stage]) -> None:
    (target,) = [t for stage in stages for t in pip_install_targets(stage)]
    makefile = (REPO_ROOT / "Makefile").read_text()
    (test_install,) = re.findall(r"pip install -q -e '([^']+)'", makefile)
    assert extras(target) == extras(test_install) - {"dev"}
    assert "stream" in extras(target)  # faust and rocksdict: what `run` needs


def test_python_matches_the_package(stages: list[Stage]) -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    required = SpecifierSet(project["requires-python"])
    for stage in stages:
        found = re.fullmatch(r"python:(\d+\.\d+)[-\w.]*", stage.base)
        assert found, f"base image {stage.base} is not an official python image"
        assert required.contains(found.group(1) + ".0"), (stage.base, str(required))


def test_copies_only_what_the_build_needs(stages: list[Stage]) -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    for stage in stages:
        for copy in stage.all("COPY"):
            if copy.startswith("--from"):
                continue
            *sources, _dest = copy.split()
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert source not in ignored, f"COPY {source}: excluded by .dockerignore"
                assert not source.startswith("config"), "settings defaults ship in the package"


def test_runs_the_worker_as_non_root_with_the_charts_user(final: Stage) -> None:
    uid, gid = final.user()
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    security = chart_values()["podSecurityContext"]
    assert int(uid) == security["runAsUser"]
    assert int(gid or uid) == security["runAsGroup"]
    created = " ".join(final.all("RUN"))
    assert f"--uid {uid}" in created and f"--gid {gid or uid}" in created


def test_entrypoint_runs_the_worker_command(final: Stage) -> None:
    command = final.exec_form("ENTRYPOINT") + final.exec_form("CMD")
    assert command == ["python", "-m", "worker", "run"]
    assert final.last("STOPSIGNAL") == "SIGTERM"  # the worker stops cleanly on it
    assert final.all("HEALTHCHECK") == []  # Kubernetes probes /healthz and /readyz instead
    # `python` is the one the build stage installed into
    venv_bin = final.env()["PATH"].split(":")[0]
    assert f"COPY --from=build {Path(venv_bin).parent} {Path(venv_bin).parent}" in _lines(), (
        "PATH's first entry is not the venv copied from the build stage"
    )
    # and the command exists: the same argv, here, answers --help
    done = subprocess.run(
        [sys.executable, *command[1:], "--help"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "--state-dir" in done.stdout and "--metrics-port" in done.stdout


def _lines() -> list[str]:
    return logical_lines(DOCKERFILE.read_text())


def test_port_and_state_dir_agree_with_settings_and_chart(
    final: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = final.env()
    values = chart_values()
    for name in [n for n in os.environ if n.startswith("WORKER_")]:
        monkeypatch.delenv(name)
    port = load_settings().metrics_port  # what an installed worker uses by default
    assert final.all("EXPOSE") == [str(port)]
    assert env["WORKER_METRICS_PORT"] == str(port) == str(values["metricsPort"])
    state_dir = env["WORKER_STATE_DIR"]
    assert state_dir == values["stateVolume"]["mountPath"]
    assert final.all("VOLUME") == [state_dir]
    owner = final.last("USER")
    assert any(
        f"mkdir -p {state_dir}" in run and f"chown {owner} {state_dir}" in run
        for run in final.all("RUN")
    ), "the state dir is not created writable for the worker's user"
    assert "WORKER_CONFIG" not in env  # the package's defaults; an operator's file is optional


def test_environment_keeps_python_from_writing_outside_the_state_dir(final: Stage) -> None:
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/nonexistent"  # nothing may rely on a writable home


def test_reader_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nENTRYPOINT python -m worker\n")
    with pytest.raises(ValueError, match="exec form"):
        parse_dockerfile(bad)[-1].exec_form("ENTRYPOINT")
    bad.write_text("RUN true\n")
    with pytest.raises(ValueError, match="before the first FROM"):
        parse_dockerfile(bad)
