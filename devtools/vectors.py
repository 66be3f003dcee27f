"""Where the test vectors are (docs/spec.md section 7): `tests/vectors/`, data in the repository."""

from __future__ import annotations

from pathlib import Path

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"
