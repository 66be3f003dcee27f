"""An agent's recent accuracy: its last 100 scored calls (SPEC 10), kept with its state.

Each scored call leaves one pair, (covered, osl abs error): whether its output tokens stayed
within the hint's `osl`, and |p50 - output tokens|. The window is a plain sequence of those
pairs, so whoever stores what runs added (a delta) can carry the pairs and rebuild the very
same window by extending it: the pairs of later runs push out the oldest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

#: scored calls the window holds
WINDOW = 100

#: one scored call: (y <= osl, |p50 - y|)
Pair = tuple[bool, float]
_covered = itemgetter(0)
_error = itemgetter(1)


class RecentAccuracy:
    """The last `WINDOW` scored calls of one agent, oldest first, as two columns: a byte per
    call (covered) and the errors. Up to 8,192 agents are kept decoded: a deque of (bool,
    float) tuples took ~9 KB for a full window, the columns ~3 KB."""

    __slots__ = ("_covered", "_errors")

    def __init__(self, pairs: Iterable[Pair] = ()) -> None:
        self._covered = bytearray()
        self._errors: list[float] = []
        self.extend(pairs)

    @property
    def pairs(self) -> list[Pair]:
        """The window's scored calls, oldest first."""
        return list(zip(map(bool, self._covered), self._errors, strict=True))

    def extend(self, pairs: Iterable[Pair]) -> None:
        """Add scored calls, in the order they were scored."""
        if not isinstance(pairs, list):
            pairs = list(pairs)
        covered, errors = self._covered, self._errors
        covered += bytes(map(_covered, pairs))
        errors += map(_error, pairs)
        excess = len(errors) - WINDOW
        if excess > 0:
            del covered[:excess], errors[:excess]

    def summary(self) -> dict[str, Any] | None:
        """`{"scored", "osl_coverage", "osl_mae"}` over the window; None before any score."""
        errors = self._errors
        if not errors:
            return None
        scored = len(errors)
        return {
            "scored": scored,
            "osl_coverage": sum(self._covered) / scored,
            "osl_mae": math.fsum(errors) / scored,
        }

    def dump(self) -> list[list[Any]]:
        """Two columns: covered (0 or 1) and the errors, oldest first."""
        return [list(self._covered), list(self._errors)]

    @classmethod
    def load(cls, data: Any) -> RecentAccuracy:
        covered, errors = data
        if len(covered) != len(errors) or len(covered) > WINDOW:
            raise ValueError("recent accuracy: columns of different or too great length")
        if any(c not in (0, 1) for c in covered):
            raise ValueError("recent accuracy: covered must be 0 or 1")
        if not all(type(e) in (int, float) and math.isfinite(e) and e >= 0 for e in errors):
            raise ValueError("recent accuracy: errors must be finite numbers >= 0")
        window = cls()
        window._covered = bytearray(map(int, covered))
        window._errors = list(map(float, errors))
        return window

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RecentAccuracy)
            and self._covered == other._covered
            and self._errors == other._errors
        )

    def __repr__(self) -> str:
        return f"RecentAccuracy({self.summary()})"
