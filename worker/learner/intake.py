"""One record from bytes to learned, with the checks SPEC 2 names, in the worker's order.

Shared by the streaming worker's processor and by `replay` (through `Fleet`), so both accept,
reject and deduplicate exactly the same records.
"""

from __future__ import annotations

from worker.learner.analysis import CallObservation
from worker.learner.config import LearnerConfig
from worker.learner.evaluation import Learned
from worker.learner.limits import Limits, check_run, check_size, check_trie
from worker.learner.run_ids import RunIds
from worker.learner.state import AgentState
from worker.models import Run, parse_run


def decode(value: bytes | None, limits: Limits) -> Run:
    """Size, JSON, schema and per-run limits; RecordError names the first that fails."""
    run = parse_run(check_size(value, limits))
    check_run(run, limits)
    return run


def learn_scored(
    state: AgentState, seen: RunIds, run: Run, config: LearnerConfig, limits: Limits
) -> Learned | None:
    """Score `run`'s LLM calls against `state` (SPEC 10), fold the run in and remember its id
    in `seen`; returns its observations, scores and level flip, or None for a run id already
    learned (nothing changes, nothing is scored); RecordError (`limits`) when it would grow
    the trie past the node limit (nothing changes either)."""
    run_id = run.id.int
    if run_id in seen:
        return None
    check_trie(state, run, limits)
    learned = state.learn(run, config)
    seen.add(run_id)
    return learned


def learn(
    state: AgentState, seen: RunIds, run: Run, config: LearnerConfig, limits: Limits
) -> list[CallObservation] | None:
    """`learn_scored`, returning only the observations (what a delta stores)."""
    learned = learn_scored(state, seen, run, config, limits)
    return None if learned is None else learned.observations
