"""`bisect_right` for lists of ints, as a loop the compiled learner keeps native.

The `bisect` module's functions are a module lookup and a Python-level call from compiled
code; the learner searches a sorted list once per LLM call (the next call's start) and
once per sample a predictor learns.
"""

from __future__ import annotations


def bisect_after(values: list[int], value: int) -> int:
    """The index after the last item of sorted `values` that is <= `value`."""
    low, high = 0, len(values)
    while low < high:
        middle = (low + high) // 2
        if value < values[middle]:
            high = middle
        else:
            low = middle + 1
    return low
