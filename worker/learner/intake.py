"""One record from bytes to learned, with the checks SPEC 2 names, in the worker's order.

Shared by the streaming worker's processor and by `replay` (through `Fleet`), so both accept,
reject and deduplicate exactly the same records.
"""

from __future__ import annotations

from worker.learner.config import LearnerConfig
from worker.learner.limits import Limits, check_nodes, check_run, check_size
from worker.learner.state import AgentState
from worker.models import Run, parse_run


def decode(value: bytes | None, limits: Limits) -> Run:
    """Size, JSON, schema and per-run limits; RecordError names the first that fails."""
    run = parse_run(check_size(value, limits))
    check_run(run, limits)
    return run


def learn(state: AgentState, run: Run, config: LearnerConfig, limits: Limits) -> bool:
    """Fold `run` into `state`: False for a run id already learned (nothing changes);
    RecordError (`limits`) when it would grow the trie past the node limit."""
    if state.has_run(run.id):
        return False
    check_nodes(state, run, limits)
    return state.learn(run, config)
