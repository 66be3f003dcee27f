"""A real install of the base package (no extras) into a fresh venv: the router side works.

The install is the uncompiled one (`AGENT_HINTS_PURE=1`, setup.py), which is also what a
machine without a C compiler gets; `test_learner_is_compiled` checks that this checkout's
own install (the one every other test runs on) is the compiled one.

Copies the package sources to a temporary directory, `pip install`s them (pip's cache
makes this cheap after the first time), and in that venv: faust and rocksdict are absent,
`worker.client` resolves and renders hints from a published record, the gateway's CLI
loads, and `python -m worker run` exits 2 naming the extra to install.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from worker.learner import build

REPO = Path(__file__).resolve().parents[2]

CLIENT_CHECK = r"""
import importlib.util, json, sys
from datetime import UTC, datetime

for extra in ("faust", "rocksdict"):
    assert importlib.util.find_spec(extra) is None, f"{extra} is installed"

from worker.learner import build
assert not build.compiled(), "AGENT_HINTS_PURE=1 installed compiled modules"

from worker.client import HintsStore, Resolver, render

hints = {"osl": 300, "iat": 40, "priority": 2, "latency_sensitivity": 3.0,
         "prefix_id": "default", "total_requests": 5}
record = {"agent_id": "a", "hints": hints, "runs": 4, "updated_at": datetime.now(UTC).isoformat()}
store = HintsStore()
assert store.apply("hints", b"a", json.dumps(record).encode())
resolution = Resolver(store).resolve("a", "plan", 1)
body = {"model": "m", "messages": []}
headers = render("dynamo", resolution.hints, body, {}).headers
print(json.dumps({"source": resolution.source, "body": body, "headers": headers}))
"""


def test_base_install_serves_the_router_side(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source)
    shutil.copytree(
        REPO / "worker", source / "worker", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "AGENT_HINTS_PURE": "1"},  # the install for a machine without gcc
    )
    assert install.returncode == 0, install.stderr[-3000:]

    check = subprocess.run(
        [python, "-c", CLIENT_CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == (
        '{"source": "agent_default", "body": {"model": "m", "messages": [], '
        '"nvext": {"agent_hints": {"osl": 300, "priority": 3}}}, '
        '"headers": {"x-dynamo-request-priority": "3"}}'
    )

    gateway = subprocess.run(
        [python, "-m", "worker", "gateway", "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gateway.returncode == 0 and "--upstream" in gateway.stdout, gateway.stderr

    worker = subprocess.run(
        [python, "-m", "worker", "run"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert worker.returncode == 2
    assert "pip install 'agent-hints-worker[stream]'" in worker.stderr
    assert sys.executable != python  # the check ran in the fresh venv, not this one


def test_learner_is_compiled() -> None:
    """`make install` compiles the learner (setup.py), so the suite tests what ships."""
    if os.environ.get("AGENT_HINTS_PURE") == "1":
        assert not build.compiled()
    else:
        assert build.compiled(), "the learner is not compiled: run `make install`"
        assert build.stale_modules() == []


def test_compiled_agent_states_stay_out_of_the_collectors_walks() -> None:
    """The learner's per-agent objects hold numbers and lists of numbers, never a cycle:
    compiled, they are not tracked by the cyclic GC (`mypyc_attr(acyclic=True)`), which at
    10,000 agents walked hundreds of thousands of them per collection (docs/performance.md)."""
    from worker.learner.adaptive_scoring import Group
    from worker.learner.backoff import Parent
    from worker.learner.exact_sums import Mean
    from worker.learner.nodes import NodeStats, StatGroup
    from worker.learner.predictor import Predictor
    from worker.learner.stats import Statistic

    objects = [Statistic(), Mean(), StatGroup(), NodeStats(), Predictor(), Parent()]
    objects.append(Group(Predictor(), Parent(), None))
    tracked = {type(each).__name__: gc.is_tracked(each) for each in objects}
    assert tracked == dict.fromkeys(tracked, not build.compiled())
