"""Whether the learner runs compiled (mypyc, setup.py) or as plain Python, and whether a
compiled module is older than its source (an edited checkout not rebuilt yet).

Python imports a compiled module in preference to its `.py`, so in a source checkout an
edit takes effect only after `make install` rebuilds it; the tests refuse to run on stale
compiled modules, and the worker logs which learner it runs.
"""

from __future__ import annotations

from pathlib import Path

from worker.learner import stats

_HERE = Path(__file__).parent


def compiled() -> bool:
    """True when the learner's modules are mypyc's C extensions."""
    return not stats.__file__.endswith(".py")


def stale_modules() -> list[str]:
    """Sources newer than their compiled module, in this package and in `worker.models` (the
    timestamp parser is compiled with it); none when not compiled."""
    stale = []
    for package in (_HERE, _HERE.parent / "models"):
        for built in package.glob("*.so"):
            source = package / (built.name.split(".", 1)[0] + ".py")
            if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
                stale.append(source.name)
    return sorted(stale)
