"""The worker's publish path gives exactly what build_trie + default_hints give."""

from __future__ import annotations

import orjson
import pytest

from worker.learner import (
    AgentState,
    LearnerConfig,
    build_trie,
    default_hints,
    state_hints,
    trie_json_and_hints,
)
from worker.records import TrieEnvelope, parse_run
from worker.workload import generate_runs


@pytest.mark.parametrize("semantics", ["corrected", "nemo-flow"])
def test_trie_json_and_hints_match_the_models(semantics: str) -> None:
    config = LearnerConfig(semantics=semantics)
    state = AgentState()
    for raw in generate_runs(300, 1, seed=11):
        state.learn(parse_run(orjson.dumps(raw)), config)
    blob, hints = trie_json_and_hints("agent-0000", state, config)
    trie = build_trie("agent-0000", state, config)
    parsed = TrieEnvelope.model_validate_json(blob)
    assert parsed.model_dump(exclude={"generated_at"}) == trie.model_dump(exclude={"generated_at"})
    assert hints == default_hints(trie, config)
    assert state_hints(state, config) == hints


def test_no_hints_without_llm_calls() -> None:
    blob, hints = trie_json_and_hints("empty", AgentState(), LearnerConfig())
    assert hints is None
    assert state_hints(AgentState(), LearnerConfig()) is None
    assert orjson.loads(blob)["root"]["predictions_any_index"] is None
