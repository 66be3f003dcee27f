"""The deploy checks' external tools, installed by the project's own scripts on first use.

`scripts/install-prometheus.sh` (Debian's `prometheus` package: `prometheus`, `promtool`) and
`scripts/install-helm.sh` (`go install` of Helm) print the directory holding the binaries and
are instant once installed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "agent-hints-worker.json"
CHART = DEPLOY / "helm" / "agent-hints-worker"
DOCKERFILE = REPO_ROOT / "Dockerfile"
OPERATIONS_DOC = REPO_ROOT / "docs" / "operations.md"


def install(script: str) -> Path:
    """Run `scripts/<script>` and return the directory it printed (its last stdout line)."""
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / script)], capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/{script} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def run_tool(*cmd: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a tool and return its result (stdout, stderr, returncode); never raises on failure."""
    return subprocess.run(
        [str(part) for part in cmd], capture_output=True, text=True, timeout=timeout
    )
