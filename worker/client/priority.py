"""Priority policies: the Dynamo `priority` a request gets (`gateway.priority.policy`).

Dynamo (>= 1.1) reads `priority` as seconds of head start in its router queue under its
default `fcfs` queue policy (an i32 >= 0; higher goes first; a request that waits gains one
unit per second), and only when requests queue. Its order is therefore
`arrival - priority`, across every agent it serves. The policies (names: the one list in
`worker.settings.PRIORITY_POLICIES`):

- `age-remaining` (default): `run age + K - R / r`, with R the run's predicted remaining
  output tokens at this call (`prediction.remaining_run_tokens`: the call's trie
  prediction and the agent's mean tokens per call, all learned by the worker), K =
  `head_start_s`, r = `tokens_per_s`. Since `arrival - run age` is the run's start, Dynamo
  then orders requests by `run start + R / r`: older runs and runs nearly done go first, a
  program-level shortest-remaining-work order that ages, so no run starves. Without a
  prediction for the agent: no priority.
- `level`: the learned latency-sensitivity level (1..scale), as before policies existed.
  Levels are relative within a run, so they do not compare across agents.
- `classes`: each agent's service class (`classes`, else `default_class`); class c's
  requests get `c * band_s` plus the `age-remaining` priority kept inside `0..band_s - 1`,
  so learned priorities never cross classes (waiting still ages every request).
- `none`: no priority (`osl` is still written).

Every policy's value is clamped to 0..2^31-1. Calls of one fan-out share the priority the
fan-out's first call got (`fanout`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from worker.client.prediction import agent_prediction, lookup_prediction, remaining_run_tokens
from worker.client.profiles import hinted_level
from worker.client.store import HintsStore
from worker.settings import PRIORITY_POLICIES, PriorityPolicyName, PrioritySettings

_I32_MAX = 2**31 - 1
#: policy name -> the method that computes it (each takes agent, name, index, hints, age)
_METHODS: dict[PriorityPolicyName, str] = {
    "age-remaining": "age_remaining",
    "level": "level",
    "classes": "service_class",
    "none": "no_priority",
}
assert tuple(_METHODS) == PRIORITY_POLICIES, "every policy name has one implementation"


class PriorityPolicy:
    """Computes a request's priority from its hints, its trie prediction and its run's age."""

    def __init__(self, settings: PrioritySettings, store: HintsStore) -> None:
        self.settings = settings
        self.store = store
        self.name: PriorityPolicyName = settings.policy
        self._compute: Callable[
            [str, str | None, int | None, Mapping[str, Any] | None, float], int | None
        ] = getattr(self, _METHODS[settings.policy])

    def priority(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
        run_age_s: float,
    ) -> int | None:
        """The priority for this request; None = write none."""
        value = self._compute(agent_id, name, call_index, hints, run_age_s)
        return None if value is None else min(max(value, 0), _I32_MAX)

    def age_remaining(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
        run_age_s: float,
    ) -> int | None:
        """`run age + K - R / r`, rounded down; None without a learned prediction."""
        entry = self.store.tries.get(agent_id)
        if entry is None or agent_id not in self.store.hints:
            return None
        try:
            agent = agent_prediction(entry.trie)
            call = (
                lookup_prediction(entry.trie, (name,), call_index)
                if name is not None and call_index is not None
                else agent
            )
            remaining = remaining_run_tokens(call, agent)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # a malformed trie: the resolver counts it
        if remaining is None:
            return None
        s = self.settings
        return int(run_age_s + s.head_start_s - remaining / s.tokens_per_s)

    def level(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
        run_age_s: float,
    ) -> int | None:
        """The learned latency-sensitivity level; None without hints or at level 0."""
        level = hinted_level(hints) if hints is not None else 0
        return level if level > 0 else None

    def service_class(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
        run_age_s: float,
    ) -> int | None:
        """The agent's class band, with `age_remaining` kept inside it."""
        s = self.settings
        band = s.classes.get(agent_id, s.default_class) * s.band_s
        inner = self.age_remaining(agent_id, name, call_index, hints, run_age_s) or 0
        return band + min(max(inner, 0), s.band_s - 1)

    def no_priority(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
        run_age_s: float,
    ) -> int | None:
        return None
