"""SPEC 8's resolution: which hints a request gets, and where they came from.

First that applies: the SPEC 5 lookup in the agent's trie at path `[name]` and the call's
index (source `trie`); the agent's default hints from `agent-hints` (`agent_default`); the
prior of the call's name and model pooled from the fleet's tries (`prior`: tries the adaptive
rule set published, `worker.learner.priors`); the configured fallback (`fallback`); nothing
(`none`).

An agent's entry is its HintsRecord: it carries `runs`, `updated_at` and the agent's recent
`accuracy`, so staleness and accuracy are judged on it. An entry learned from fewer than
`min_runs` runs, older than `max_age_s`, or whose recent osl coverage is below
`min_osl_coverage` (once at least `min_scored` calls were scored) is skipped together with
the agent's trie; a trie older than `max_age_s` (by its `generated_at`) is skipped on its
own. A trie without a HintsRecord is not used: a tombstone on `agent-hints` deletes the
agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from worker.client.store import HintsEntry, HintsStore, TrieEntry, check_hints
from worker.learner.config import LearnerConfig
from worker.learner.hints import lookup_hints, prediction_hints

Source = Literal["trie", "agent_default", "prior", "fallback", "none"]
SOURCES: tuple[Source, ...] = ("trie", "agent_default", "prior", "fallback", "none")
#: why an entry was passed over: too old, too few runs, hints not accurate enough lately, a
#: trie that cannot be walked
SkipReason = Literal["max_age", "min_runs", "accuracy", "invalid_trie"]
SKIP_REASONS: tuple[SkipReason, ...] = ("max_age", "min_runs", "accuracy", "invalid_trie")


class Resolution(NamedTuple):
    """The hints for one request (AgentHints fields, or None) and their source."""

    source: Source
    hints: Mapping[str, Any] | None
    #: the request's call index (None when it had no run or call name)
    call_index: int | None = None
    #: set when a learned entry existed but was skipped
    skipped: SkipReason | None = None
    #: the priority the client's policy chose (`dynamo` profile); None = none
    priority: int | None = None


NO_HINTS = Resolution("none", None)
#: what a resolver (and a client) remembers per call name at most; more and it forgets all
MAX_REMEMBERED = 100_000
_INVALID = object()


class Resolver:
    """Resolution against a store, with the staleness rules and fallback of SPEC 8."""

    def __init__(
        self,
        store: HintsStore,
        *,
        scale: int = 5,
        max_age_s: float = 0.0,
        min_runs: int = 0,
        min_osl_coverage: float = 0.0,
        min_scored: int = 20,
        fallback: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`scale` is the learner's (priority = scale - level); `max_age_s` 0 = no limit;
        `min_osl_coverage` 0 = no floor, else it applies to agents with at least
        `min_scored` scored calls in their recent accuracy."""
        if max_age_s < 0 or min_runs < 0 or min_scored < 0:
            raise ValueError("max_age_s, min_runs and min_scored must be >= 0")
        if not 0 <= min_osl_coverage <= 1:
            raise ValueError("min_osl_coverage must be in 0..1")
        self.store = store
        self.config = LearnerConfig(scale=scale)
        self.max_age_s = max_age_s
        self.min_runs = min_runs
        self.min_osl_coverage = min_osl_coverage
        self.min_scored = min_scored
        self.fallback = check_hints(dict(fallback)) if fallback is not None else None
        self.clock = clock
        #: (agent, name, call index) -> (the trie entry looked up, its hints): a trie is
        #: only replaced, never changed, so a lookup holds while its entry is the store's
        self._lookups: dict[tuple[str, str, int], tuple[TrieEntry, Any]] = {}

    def resolve(
        self, agent_id: str, name: str | None, call_index: int | None, model: str | None = None
    ) -> Resolution:
        """Hints for the `call_index`-th call named `name` of a run of `agent_id`, made with
        `model` (the request's, when known).

        Without a name or index (a request outside any known run) only the agent-wide
        sources apply, and the prior of the name when there is one.
        """
        store = self.store
        entry = store.hints.get(agent_id)
        skipped: SkipReason | None = None
        if entry is not None:
            if entry.runs < self.min_runs:
                skipped, entry = "min_runs", None
            elif self.max_age_s and self.clock() - entry.updated_at_s > self.max_age_s:
                skipped, entry = "max_age", None
            elif self._inaccurate(entry):
                skipped, entry = "accuracy", None
        if entry is not None and name is not None and call_index is not None:
            trie = store.tries.get(agent_id)
            if trie is not None:
                if self.max_age_s and self.clock() - trie.generated_at_s > self.max_age_s:
                    skipped = "max_age"
                else:
                    hints = self._lookup(agent_id, trie, name, call_index)
                    if hints is _INVALID:
                        hints, skipped = None, "invalid_trie"
                    if hints is not None:
                        return Resolution("trie", hints, call_index)
        if entry is not None and entry.hints is not None:
            return Resolution("agent_default", entry.hints, call_index, skipped)
        if name is not None:
            prior = store.priors.prediction(name, model)
            if prior is not None:
                hints = prediction_hints(prior, f"{agent_id}-d1", call_index or 1, self.config)
                return Resolution("prior", hints, call_index, skipped)
        if self.fallback is not None:
            return Resolution("fallback", self.fallback, call_index, skipped)
        return Resolution("none", None, call_index, skipped)

    def _inaccurate(self, entry: HintsEntry) -> bool:
        """Below the osl coverage floor over enough recently scored calls."""
        accuracy = entry.accuracy
        return (
            accuracy is not None
            and accuracy.scored >= self.min_scored
            and accuracy.osl_coverage < self.min_osl_coverage
        )

    def _lookup(self, agent_id: str, trie: TrieEntry, name: str, call_index: int) -> Any:
        """`lookup_hints` in `trie` (remembered), or `_INVALID` when it cannot be walked."""
        key = (agent_id, name, call_index)
        known = self._lookups.get(key)
        if known is not None and known[0] is trie:
            return known[1]
        try:
            hints: Any = lookup_hints(trie.trie, (name,), call_index, self.config)
        except (KeyError, TypeError, ValueError, AttributeError):
            hints = _INVALID
        if len(self._lookups) >= MAX_REMEMBERED:
            self._lookups.clear()  # names are the callers': never hold an unbounded set
        self._lookups[key] = (trie, hints)
        return hints
