"""An agent's recent accuracy: its last 100 scored calls (SPEC 10), kept with its state.

Each scored call leaves one pair, (covered, osl abs error): whether its output tokens stayed
within the hint's `osl`, and |p50 - output tokens|. The window is a plain sequence of those
pairs, so whoever stores what runs added (a delta) can carry the pairs and rebuild the very
same window by extending it: the pairs of later runs push out the oldest.
"""

from __future__ import annotations

import math
from collections import deque
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
    """The last `WINDOW` scored calls of one agent, oldest first."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: Iterable[Pair] = ()) -> None:
        self.pairs: deque[Pair] = deque(pairs, maxlen=WINDOW)

    def extend(self, pairs: Iterable[Pair]) -> None:
        """Add scored calls, in the order they were scored."""
        self.pairs.extend(pairs)

    def summary(self) -> dict[str, Any] | None:
        """`{"scored", "osl_coverage", "osl_mae"}` over the window; None before any score."""
        pairs = self.pairs
        if not pairs:
            return None
        scored = len(pairs)  # the columns summed in C: this runs on every hints build
        return {
            "scored": scored,
            "osl_coverage": sum(map(_covered, pairs)) / scored,
            "osl_mae": math.fsum(map(_error, pairs)) / scored,
        }

    def dump(self) -> list[list[Any]]:
        """Two columns: covered (0 or 1) and the errors, oldest first."""
        return [[int(c) for c, _ in self.pairs], [e for _, e in self.pairs]]

    @classmethod
    def load(cls, data: Any) -> RecentAccuracy:
        covered, errors = data
        if len(covered) != len(errors) or len(covered) > WINDOW:
            raise ValueError("recent accuracy: columns of different or too great length")
        if any(c not in (0, 1) for c in covered):
            raise ValueError("recent accuracy: covered must be 0 or 1")
        if not all(type(e) in (int, float) and math.isfinite(e) and e >= 0 for e in errors):
            raise ValueError("recent accuracy: errors must be finite numbers >= 0")
        return cls(zip(map(bool, covered), map(float, errors), strict=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecentAccuracy) and self.pairs == other.pairs

    def __repr__(self) -> str:
        return f"RecentAccuracy({self.summary()})"
