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
fan-out's first call got (`fanout`). A policy computes in two parts, what the request and
the store decide (`fixed_part`, which `HintsClient` remembers) and what the run's age adds
(`with_age`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from worker.client.prediction import agent_prediction, lookup_prediction, remaining_run_tokens
from worker.client.profiles import hinted_level
from worker.client.store import HintsStore
from worker.settings import PRIORITY_POLICIES, PriorityPolicyName, PrioritySettings

_I32_MAX = 2**31 - 1
#: policy name -> (its method for the part of the priority that the request and the store
#: fix, its method for the priority from that part and the run's age)
_METHODS: dict[PriorityPolicyName, tuple[str, str]] = {
    "age-remaining": ("_remaining_term", "_age_remaining"),
    "level": ("_level", "_as_fixed"),
    "classes": ("_class_terms", "_service_class"),
    "none": ("_no_priority", "_as_fixed"),
}
assert tuple(_METHODS) == PRIORITY_POLICIES, "every policy name has one implementation"


class PriorityPolicy:
    """Computes a request's priority from its hints, its trie prediction and its run's age.

    In two parts, so a caller can remember the first: `fixed_part` (what the request and
    the store's entries for its agent decide) and `with_age` (the priority from that part
    and the run's age). `priority` is both."""

    def __init__(self, settings: PrioritySettings, store: HintsStore) -> None:
        self.settings = settings
        self.store = store
        self.name: PriorityPolicyName = settings.policy
        fixed, with_age = _METHODS[settings.policy]
        self._fixed: Callable[[str, str | None, int | None, Mapping[str, Any] | None], Any]
        self._fixed = getattr(self, fixed)
        self._with_age: Callable[[Any, float], int | None] = getattr(self, with_age)

    def priority(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
        run_age_s: float,
    ) -> int | None:
        """The priority for this request; None = write none."""
        return self.with_age(self.fixed_part(agent_id, name, call_index, hints), run_age_s)

    def fixed_part(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
    ) -> Any:
        """The part of the priority the request and the store decide: the same while the
        store's entries for the agent are the same objects (records replace entries)."""
        return self._fixed(agent_id, name, call_index, hints)

    def with_age(self, part: Any, run_age_s: float) -> int | None:
        """The priority from `fixed_part` and the run's age, clamped to 0..2^31-1."""
        value = self._with_age(part, run_age_s)
        return None if value is None else min(max(value, 0), _I32_MAX)

    # --- age-remaining: run age + K - R / r ---------------------------------------------------

    def _remaining_term(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
    ) -> float | None:
        """R / r; None without a learned prediction."""
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
        return remaining / self.settings.tokens_per_s

    def _age_remaining(self, term: float | None, run_age_s: float) -> int | None:
        """`run age + K - R / r`, rounded down; None without a learned prediction."""
        if term is None:
            return None
        return int(run_age_s + self.settings.head_start_s - term)

    # --- level: the learned latency-sensitivity level ---------------------------------------

    def _level(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
    ) -> int | None:
        """The learned latency-sensitivity level; None without hints or at level 0."""
        level = hinted_level(hints) if hints is not None else 0
        return level if level > 0 else None

    def _as_fixed(self, part: int | None, run_age_s: float) -> int | None:
        return part

    # --- classes: the agent's class band, age-remaining inside it ---------------------------

    def _class_terms(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
    ) -> tuple[int, float | None]:
        """(the agent's class band, the age-remaining term)."""
        s = self.settings
        band = s.classes.get(agent_id, s.default_class) * s.band_s
        return band, self._remaining_term(agent_id, name, call_index, hints)

    def _service_class(self, terms: tuple[int, float | None], run_age_s: float) -> int:
        band, term = terms
        inner = self._age_remaining(term, run_age_s) or 0
        return band + min(max(inner, 0), self.settings.band_s - 1)

    # --- none ------------------------------------------------------------------------------

    def _no_priority(
        self,
        agent_id: str,
        name: str | None,
        call_index: int | None,
        hints: Mapping[str, Any] | None,
    ) -> None:
        return None
