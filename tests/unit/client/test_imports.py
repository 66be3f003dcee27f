"""The router side needs neither faust nor RocksDB; the worker says how to get them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
STREAM_MODULES = ("faust", "mode", "rocksdict")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_client_and_gateway_imports_leave_faust_and_rocksdict_out() -> None:
    done = run_python(
        "import sys\n"
        "import worker.client, worker.gateway, worker.gateway.command\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {STREAM_MODULES!r}))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_check_sees_faust_when_the_worker_is_imported() -> None:
    done = run_python(
        "import sys\nimport worker.stream.service\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {STREAM_MODULES!r}))\n"
    )
    assert done.returncode == 0, done.stderr
    assert "'faust'" in done.stdout  # the check above would notice them


BLOCK_STREAM_EXTRA = f"""
import importlib.abc, sys

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {STREAM_MODULES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from worker.cli import main
"""


def test_run_without_the_stream_extra_exits_2_with_the_pip_command() -> None:
    done = run_python(BLOCK_STREAM_EXTRA + "sys.exit(main(['run']))")
    assert done.returncode == 2
    assert "pip install 'agent-hints-worker[stream]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_other_commands_work_without_the_stream_extra() -> None:
    done = run_python(BLOCK_STREAM_EXTRA + "sys.exit(main(['gateway', '--help']))")
    assert done.returncode == 0, done.stderr
    assert "--upstream" in done.stdout
