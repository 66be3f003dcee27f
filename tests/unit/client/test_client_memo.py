"""`HintsClient` remembers what an agent's own entries decide, never what the fleet's
priors decide: a prior follows other agents' tries, which change under it."""

from __future__ import annotations

import orjson

from tests.unit.client.test_resolution import ADAPTIVE, NOW, stamp
from tests.unit.runs import llm, run
from worker.client import HintsClient
from worker.learner import AgentState, state_hints, trie_dict


def publish(client: HintsClient, agent: str, tokens: int) -> None:
    state = AgentState()
    state.learn(run(llm("plan", 0, 100, tokens, "m")), ADAPTIVE)
    trie = trie_dict(agent, state, ADAPTIVE) | {"generated_at": stamp(NOW)}
    hints = {"agent_id": agent, "hints": state_hints(state, ADAPTIVE), "runs": 1}
    store = client.view.store
    assert store.apply("hints", agent.encode(), orjson.dumps(hints | {"updated_at": stamp(NOW)}))
    assert store.apply("tries", agent.encode(), orjson.dumps(trie))


def test_a_prior_that_appears_later_is_used_by_the_next_call() -> None:
    client = HintsClient("unused:9092")
    client.view.store.priors.max_stale_s = 0.0
    client.view._ready.set()
    assert client.hints_for("new", "r1", "plan", "m").source == "none"  # nothing known yet
    publish(client, "a", 100)
    got = client.hints_for("new", "r2", "plan", "m")
    assert got.source == "prior" and got.hints is not None
    publish(client, "b", 900)  # the pooled prior moves with the fleet
    again = client.hints_for("new", "r3", "plan", "m")
    assert again.source == "prior" and again.hints is not None
    assert again.hints["osl"] > got.hints["osl"]
    assert client.hints_for("a", "r1", "plan", "m").source == "trie"  # its own entries
