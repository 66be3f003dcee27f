"""Helpers for comparing agent states in tests."""

from __future__ import annotations

from worker.learner import AgentState
from worker.learner.accuracy import RecentAccuracy


def statistics_bytes(state: AgentState) -> bytes:
    """A state's bytes without its recent accuracy: merging states learned apart cannot
    rebuild that (a score depends on the runs learned before it), their statistics it must."""
    copy = AgentState.from_bytes(state.to_bytes())
    copy.recent = RecentAccuracy()
    return copy.to_bytes()
