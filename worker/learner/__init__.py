"""The learner: a pure, Kafka-free core (run records in, trie and hints out).

state = AgentState()
learned = state.learn(run, config)   # observations, per-call scores (SPEC 10), level flip
trie = build_trie("agent-7", state, config)
hints = default_hints(trie, config)          # AgentHints | None
blob = state.to_bytes(); AgentState.from_bytes(blob).merge(other_state)
state.recent.summary()            # {"scored", "osl_coverage", "osl_mae"} over the last 100
"""

from worker.learner.config import SEMANTICS, AdaptiveSettings, LearnerConfig, Semantics, Weights
from worker.learner.fleet import Fleet
from worker.learner.hints import default_hints, lookup_hints
from worker.learner.state import AgentState
from worker.learner.trie import build_trie, state_hints, trie_dict

__all__ = [
    "SEMANTICS",
    "AdaptiveSettings",
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
