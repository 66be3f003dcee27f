"""Dynamo 1.6.1 in a venv of its own under `.cache/dynamo/` (never in the project's venv).

PyPI only, in three steps (checked facts: `../shared/notes/dynamo.md`):
1. `ai-dynamo-runtime==1.6.1` (the Rust runtime, frontend and KV router; installs cleanly);
2. `ai-dynamo==1.6.1 --no-deps`: its hard dependency `aisimulate` downloads from a host this
   machine cannot reach, and only the planner and the `--ais-*` options need it;
3. the rest of `ai-dynamo`'s requirements by hand, plus `tokenizers` (the model directory's
   tokenizer is trained with it).

A marker file records a finished install; later calls only check it. Python 3.11, as the
project's (`sys.executable` unless told otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION = "1.6.1"
HOME = Path(os.environ.get("DYNAMO_CACHE_DIR") or REPO_ROOT / ".cache" / "dynamo") / VERSION
VENV = HOME / "venv"
PYTHON = VENV / "bin" / "python"
_MARKER = VENV / ".installed"

RUNTIME = [f"ai-dynamo-runtime=={VERSION}"]
FRAMEWORK = [f"ai-dynamo=={VERSION}"]
#: ai-dynamo 1.6.1's requirements other than aisimulate (its METADATA), and tokenizers
REQUIREMENTS = [
    "aiohttp>=3.14.3,<4",
    "certifi",
    "kubernetes>=32.0.1,<33",
    "msgspec>=0.19",
    "prometheus-client>=0.23.1,<1",
    "pyzmq>=26",
    "redis>=6.2,<9",
    "tqdm",
    "transformers>=4.56",
    "typing-extensions>=4.10",
    "zstandard>=0.23,<1",
    "tokenizers",
]


class DynamoInstallError(RuntimeError):
    """pip failed; the message ends with its output's tail."""


def installed() -> bool:
    return _MARKER.is_file() and PYTHON.exists()


def _pip(*args: str) -> None:
    done = subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise DynamoInstallError(f"pip install {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def install(python: str = sys.executable, *, verbose: bool = True) -> Path:
    """Install once (about a minute and ~730 MB on a clean cache); the venv's python."""
    if installed():
        return PYTHON
    start = time.monotonic()
    if verbose:
        print(f"installing Dynamo {VERSION} into {VENV} (once) ...", flush=True)
    HOME.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", "--clear", str(VENV)], check=True)
    _pip(*RUNTIME)
    _pip("--no-deps", *FRAMEWORK)
    _pip(*REQUIREMENTS)
    _MARKER.write_text(f"{VERSION}\n")
    if verbose:
        print(f"Dynamo {VERSION} installed in {time.monotonic() - start:.0f} s", flush=True)
    return PYTHON


if __name__ == "__main__":
    install()
