"""The learner: a pure, Kafka-free core (run records in, trie and hints out).

state = AgentState()
observations = state.learn(run, config)      # what the run taught (skipping duplicates
                                             # is the caller's: `intake.learn`, `Fleet`)
trie = build_trie("agent-7", state, config)
hints = default_hints(trie, config)          # AgentHints | None
blob = state.to_bytes(); AgentState.from_bytes(blob).merge(other_state)
"""

from worker.learner.config import LearnerConfig, Semantics, Weights
from worker.learner.fleet import Fleet
from worker.learner.hints import default_hints, lookup_hints
from worker.learner.state import AgentState
from worker.learner.trie import build_trie, state_hints, trie_dict

__all__ = [
    "AgentState",
    "Fleet",
    "LearnerConfig",
    "Semantics",
    "Weights",
    "build_trie",
    "default_hints",
    "lookup_hints",
    "state_hints",
    "trie_dict",
]
