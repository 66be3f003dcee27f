"""The states of many agents, learned from a stream of runs: replay, benchmarks and tests.

The streaming worker keeps its states in a RocksDB-backed cache instead, but learns each
run through the same `intake`, so both end with the same states for the same input. Run ids
are remembered for the whole input (the last `dedupe_window` of them), as the worker does per
partition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from worker.learner import intake
from worker.learner.config import LearnerConfig
from worker.learner.evaluation import Learned
from worker.learner.hints import default_hints
from worker.learner.limits import Limits
from worker.learner.run_ids import RunIds
from worker.learner.state import AgentState
from worker.learner.trie import build_trie
from worker.models import AgentHints, Run, TrieEnvelope


@dataclass
class Fleet:
    """Agent states by agent id, with the config and limits every run is learned under."""

    config: LearnerConfig = field(default_factory=LearnerConfig)
    limits: Limits = field(default_factory=Limits)
    states: dict[str, AgentState] = field(default_factory=dict)
    seen: RunIds | None = None

    def __post_init__(self) -> None:
        if self.seen is None:
            self.seen = RunIds(self.config.dedupe_window)

    def learn(self, run: Run) -> Learned | None:
        """Score `run` and fold it into its agent's state (`intake.learn_scored`); None for a
        duplicate; RecordError (`limits`)."""
        state = self.states.get(run.agent_id)
        if state is None:
            state = self.states[run.agent_id] = AgentState()
        assert self.seen is not None
        return intake.learn_scored(state, self.seen, run, self.config, self.limits)

    def outputs(self) -> Iterator[tuple[str, AgentHints | None, TrieEnvelope]]:
        """(agent id, default hints, trie) per agent, in agent-id order (SPEC 7's order)."""
        for agent_id in sorted(self.states):
            trie = build_trie(agent_id, self.states[agent_id], self.config)
            yield agent_id, default_hints(trie, self.config), trie
