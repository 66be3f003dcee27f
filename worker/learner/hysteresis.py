"""Hysteresis (the `adaptive` rule set): a published level moves only once the score has
passed the boundary by a margin.

SPEC 5's level of a mean score m is `clamp(round(m (scale - 1)) + 1, 1, scale)`: a mean
hovering at a boundary flips it run after run. With margin h, after each run a group's
published level L changes only when its SPEC 5 level differs and `m (scale - 1)` lies beyond
the boundary by h: at least `L - 1/2 + h` going up, below `L - 3/2 - h` going down; it then
takes the SPEC 5 level. At h = 0 this is the SPEC 5 level, exactly. The levels are kept per
group (`Levels`), so they depend on the order runs were learned in, and are stored with the
state.
"""

from __future__ import annotations

from typing import Any

from worker.learner.exact_sums import Mean
from worker.learner.hints import level_at

#: a statistics group: (call name, call index), None for the root, 0 for any index. Typed
#: as a tuple of any length: compiled code then keeps a key as the one tuple object it is,
#: where a fixed-length tuple type is taken apart and built anew at each dict it meets.
GroupKey = tuple[Any, ...]


def next_level(previous: int | None, mean: float, scale: int, margin: float) -> int:
    """The published level after a run, from the one before and the group's mean score."""
    level = level_at(mean, scale)
    if previous is None or level == previous or not margin:
        return level
    position = mean * (scale - 1)  # SPEC 5's level is round(position) + 1
    if level > previous:
        return level if position >= previous - 0.5 + margin else previous
    return level if position < previous - 1.5 - margin else previous


#: a group's mean score as a float, and the float means, `low` up to (not including)
#: `high`, at which its level stays: (mean, low, high)
Band = tuple[float, float, float]
#: no band: every mean is outside it
NO_BAND: Band = (0.0, float("inf"), float("-inf"))


class Levels:
    """Each group's published level, as hysteresis left it after the last run.

    `update` also returns the group's band (not stored): while its mean score, as a float
    kept in step with the exact one, stays inside the band (less a margin far above its
    rounding error), its level cannot change and no exact mean need be computed; the levels
    are the same either way."""

    __slots__ = ("levels",)

    def __init__(self, levels: dict[GroupKey, int] | None = None) -> None:
        self.levels: dict[GroupKey, int] = levels if levels is not None else {}

    def get(self, key: GroupKey) -> int | None:
        return self.levels.get(key)

    def update(self, key: GroupKey, score: Mean, scale: int, margin: float) -> Band:
        """After a run changed the group `key` (its mean score now `score`): its level, and
        the band its level now holds in."""
        levels = self.levels
        if not score.count:
            levels.pop(key, None)
            return NO_BAND
        mean = score.mean  # exact: a big-int division, done once
        level = levels[key] = next_level(levels.get(key), mean, scale, margin)
        low, high = _band(level, scale, margin)
        return mean, low, high

    def keep_only(self, keys: set[GroupKey]) -> None:
        """Forget the levels of groups that no longer exist (after a shift)."""
        self.levels = {k: v for k, v in self.levels.items() if k in keys}

    def dump(self) -> list[list[Any]]:
        return [
            [name, index, level] for (name, index), level in sorted(self.levels.items(), key=_order)
        ]

    @classmethod
    def load(cls, data: Any) -> Levels:
        levels: dict[GroupKey, int] = {}
        for name, index, level in data:
            if not (name is None or isinstance(name, str)) or type(index) is not int:
                raise ValueError("levels: a group is (name or null, index)")
            if type(level) is not int or level < 1:
                raise ValueError("levels: a level is an integer >= 1")
            levels[(name, index)] = level
        return cls(levels)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Levels) and self.levels == other.levels


#: far above the rounding error of a float mean kept in step over millions of scores
_SAFE = 1e-9


def _band(level: int, scale: int, margin: float) -> tuple[float, float]:
    """The means, less `_SAFE` at each end, at which `next_level` keeps `level`: positions
    mean (scale - 1) from `level - 3/2 - margin` up to, not including, `level - 1/2 + margin`
    (unbounded below level 1 and above the scale)."""
    low = (level - 1.5 - margin) / (scale - 1) + _SAFE if level > 1 else float("-inf")
    high = (level - 0.5 + margin) / (scale - 1) - _SAFE if level < scale else float("inf")
    return low, high


def _order(item: tuple[GroupKey, int]) -> tuple[bool, str, int]:
    (name, index), _ = item
    return name is not None, name or "", index
