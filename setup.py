"""Builds the learner's modules as C extensions with mypyc (the rest is in pyproject.toml).

The learner is plain, strictly typed Python; mypyc compiles those same sources, which makes
learning, scoring and trie builds ~1.3x faster and a worker's run ~20% cheaper
(docs/performance.md). Nothing changes in behaviour: the sources stay the reference, and
`AGENT_HINTS_PURE=1` installs them uncompiled (for a machine without a C compiler).
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

#: the package mypyc compiles
LEARNER = Path(__file__).parent / "worker" / "learner"
#: what stays interpreted: the pydantic models (config, limits), which mypyc does not
#: compile, the package's __init__, and `build` (which tells compiled from not). The stream
#: layer stays interpreted too: compiled, it gained nothing measurable (its time is faust's,
#: aiokafka's and RocksDB's).
INTERPRETED = {"__init__.py", "build.py", "config.py", "limits.py"}


#: compiled beside the learner: the RFC 3339 parser, which runs for every timestamp of every
#: run record (~20 per run; compiled it takes 0.65x the decode time of a run)
ALSO_COMPILED = ["worker/models/timestamps.py"]


def compiled_modules() -> list[str]:
    """The modules mypyc compiles, as paths relative to this file."""
    learner = (
        f"worker/learner/{path.name}"
        for path in LEARNER.glob("*.py")
        if path.name not in INTERPRETED
    )
    return sorted([*learner, *ALSO_COMPILED])


def extensions() -> list[object]:
    if os.environ.get("AGENT_HINTS_PURE") == "1":
        return []
    from mypyc.build import mypycify

    # mypy's own defaults, not the strict type check of pyproject.toml (`make lint` runs that):
    # the build's isolated environment has none of the dependencies whose types it would need
    options = ["--config-file=", "--ignore-missing-imports"]
    return mypycify(
        [*options, *compiled_modules()], opt_level="3", group_name="agent_hints_learner"
    )


setup(ext_modules=extensions())
