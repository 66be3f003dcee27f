"""Where the shared test vectors are (SPEC section 7): `shared/vectors` beside the repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """shared/ sits beside the repository; SHARED_DIR overrides. A clone made elsewhere from a
    local checkout (`git clone /work/main /tmp/x`) finds it beside the repository it was
    cloned from."""
    if "SHARED_DIR" in os.environ:
        return Path(os.environ["SHARED_DIR"])
    beside = REPO.parent / "shared"
    if beside.is_dir():
        return beside
    origin = subprocess.run(
        ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        return Path(origin).resolve().parent / "shared"
    return beside


VECTORS = shared_dir() / "vectors"
