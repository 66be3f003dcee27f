"""The rounding rules of SPEC section 5: halves away from zero, unsigned fields saturate."""

from __future__ import annotations

import math

from worker.models import UINT32_MAX


def round_half_away(value: float) -> int:
    """Round to the nearest integer, halves away from zero (2.5 -> 3, -2.5 -> -3)."""
    magnitude = math.floor(abs(value) + 0.5)
    return -magnitude if value < 0 else magnitude


def saturate_u32(value: float) -> int:
    """An unsigned 32-bit field: NaN and negatives become 0, overflow the maximum."""
    if 0 < value < UINT32_MAX:  # the usual case (False for NaN): halves round up
        return int(value + 0.5)
    if math.isnan(value) or value <= 0:
        return 0
    if value >= UINT32_MAX:
        return UINT32_MAX
    return round_half_away(value)
