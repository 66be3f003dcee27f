"""The worker's publish path (trie_dict + state_hints) equals build_trie + default_hints."""

from __future__ import annotations

import orjson
import pytest

from worker.demo_workload import generate_runs
from worker.learner import (
    AgentState,
    LearnerConfig,
    build_trie,
    default_hints,
    state_hints,
    trie_dict,
)
from worker.models import AgentHints, TrieEnvelope, parse_run


@pytest.mark.parametrize("semantics", ["corrected", "nemo-flow"])
def test_publish_path_matches_the_models(semantics: str) -> None:
    config = LearnerConfig(semantics=semantics)
    state = AgentState()
    for raw in generate_runs(300, 1, seed=11):
        state.learn(parse_run(orjson.dumps(raw)), config)
    blob = orjson.dumps(trie_dict("agent-0000", state, config))
    hints = state_hints(state, config)
    trie = build_trie("agent-0000", state, config)
    parsed = TrieEnvelope.model_validate_json(blob)
    assert parsed.model_dump(exclude={"generated_at"}) == trie.model_dump(exclude={"generated_at"})
    assert AgentHints.model_validate(hints) == default_hints(trie, config)


def test_no_hints_without_llm_calls() -> None:
    blob = orjson.dumps(trie_dict("empty", AgentState(), LearnerConfig()))
    assert state_hints(AgentState(), LearnerConfig()) is None
    assert orjson.loads(blob)["root"]["predictions_any_index"] is None
