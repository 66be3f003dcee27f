"""The router's local copy of `agent-hints` and `agent-tries` (SPEC 8's view), without Kafka.

`HintsView` feeds it the records it reads; tests and embedders can feed it directly. Each
topic is compacted and keyed by agent id, so the last value per key is the agent's entry; a
tombstone (null value) deletes it. A value that is not the published shape also removes the
agent's entry (the topic's latest word on that agent is unusable) and is counted, never
raised: a router keeps serving whatever lands on the topic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import orjson

from worker.learner.priors import PriorIndex
from worker.models.timestamps import NS_PER_SECOND, parse_timestamp_ns

Topic = Literal["hints", "tries"]
_U32 = 2**32 - 1
_I32 = 2**31 - 1


@dataclass(frozen=True, slots=True)
class AgentAccuracy:
    """How an agent's hints did over its last scored calls (at most 100, SPEC 10)."""

    scored: int
    osl_coverage: float
    osl_mae: float


@dataclass(frozen=True, slots=True)
class HintsEntry:
    """An agent's HintsRecord: default hints (None before any LLM call), runs, age, and its
    recent accuracy (SPEC 10) when the record carries one."""

    hints: dict[str, Any] | None
    runs: int
    updated_at_s: float
    accuracy: AgentAccuracy | None = None


@dataclass(frozen=True, slots=True)
class TrieEntry:
    """An agent's TrieEnvelope as published (plain JSON data) and when it was built."""

    trie: dict[str, Any]
    generated_at_s: float


class InvalidRecord(ValueError):
    """A topic value that is not the published shape (the message says what is wrong)."""


class HintsStore:
    """Latest HintsRecord and TrieEnvelope per agent id, and the priors pooled from the
    tries (`priors`; a prior may lag its tries by up to `prior_max_stale_s`)."""

    def __init__(self, prior_max_stale_s: float = 1.0) -> None:
        self.hints: dict[str, HintsEntry] = {}
        self.tries: dict[str, TrieEntry] = {}
        self.priors = PriorIndex(prior_max_stale_s)
        #: records skipped per topic (no key, bad JSON, wrong shape)
        self.invalid: dict[Topic, int] = {"hints": 0, "tries": 0}
        self.last_error: str | None = None

    def apply(self, topic: Topic, key: bytes | None, value: bytes | None) -> bool:
        """Apply one record of `topic`; False (and counted) when it was not usable."""
        table: dict[str, Any] = self.hints if topic == "hints" else self.tries
        if key is None:
            return self._reject(topic, "record without a key (agent id)")
        try:
            agent_id = key.decode("utf-8")
        except UnicodeDecodeError:
            return self._reject(topic, "key is not UTF-8")
        if value is None:
            table.pop(agent_id, None)
            if topic == "tries":
                self.priors.set_trie(agent_id, None)
            return True
        try:
            data = orjson.loads(value)
            table[agent_id] = parse_hints(data) if topic == "hints" else parse_trie(data)
        except (orjson.JSONDecodeError, InvalidRecord) as exc:
            table.pop(agent_id, None)
            if topic == "tries":
                self.priors.set_trie(agent_id, None)
            return self._reject(topic, f"{agent_id}: {exc}")
        if topic == "tries":
            self.priors.set_trie(agent_id, data)
        return True

    def _reject(self, topic: Topic, why: str) -> bool:
        self.invalid[topic] += 1
        self.last_error = f"{topic}: {why}"
        return False


def _timestamp_s(data: dict[str, Any], name: str) -> float:
    try:
        return parse_timestamp_ns(data[name]) / NS_PER_SECOND
    except KeyError:
        raise InvalidRecord(f"missing {name}") from None
    except ValueError as exc:
        raise InvalidRecord(f"{name}: {exc}") from None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _is_text(value: Any) -> bool:
    """A string without control characters (it may end up in an HTTP header)."""
    return isinstance(value, str) and _CONTROL.search(value) is None


def _is_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def check_hints(hints: Any) -> dict[str, Any]:
    """The AgentHints fields of SPEC 3, or InvalidRecord naming the first bad one."""
    if not isinstance(hints, dict):
        raise InvalidRecord("hints: expected an object")
    for name in ("osl", "iat", "total_requests"):
        if not _is_int(hints.get(name), 0, _U32):
            raise InvalidRecord(f"hints.{name}: expected an integer in 0..2^32-1")
    if not _is_int(hints.get("priority"), -_I32 - 1, _I32):
        raise InvalidRecord("hints.priority: expected a 32-bit integer")
    level = hints.get("latency_sensitivity")
    if not isinstance(level, int | float) or isinstance(level, bool):
        raise InvalidRecord("hints.latency_sensitivity: expected a number")
    if not math.isfinite(level) or level < 0:
        raise InvalidRecord("hints.latency_sensitivity: expected a finite number >= 0")
    if not _is_text(hints.get("prefix_id")):
        raise InvalidRecord("hints.prefix_id: expected a string without control characters")
    return hints


def parse_hints(data: Any) -> HintsEntry:
    """A HintsRecord (`{"agent_id", "hints", "runs", "updated_at"}`) as an entry."""
    if not isinstance(data, dict):
        raise InvalidRecord("expected a JSON object")
    hints = data.get("hints")
    runs = data.get("runs")
    if not isinstance(runs, int) or not _is_int(runs, 0, 2**63 - 1):
        raise InvalidRecord("runs: expected an integer >= 0")
    return HintsEntry(
        None if hints is None else check_hints(hints),
        runs,
        _timestamp_s(data, "updated_at"),
        _accuracy(data.get("accuracy")),
    )


def _accuracy(data: Any) -> AgentAccuracy | None:
    """A HintsRecord's optional `accuracy`, or InvalidRecord naming what is wrong."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise InvalidRecord("accuracy: expected an object")
    scored, coverage, mae = data.get("scored"), data.get("osl_coverage"), data.get("osl_mae")
    if not isinstance(scored, int) or not _is_int(scored, 0, 2**63 - 1):
        raise InvalidRecord("accuracy.scored: expected an integer >= 0")
    if not _is_number(coverage) or not 0 <= coverage <= 1:
        raise InvalidRecord("accuracy.osl_coverage: expected a number in 0..1")
    if not _is_number(mae) or mae < 0:
        raise InvalidRecord("accuracy.osl_mae: expected a finite number >= 0")
    return AgentAccuracy(scored, float(coverage), float(mae))


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_trie(data: Any) -> TrieEntry:
    """A TrieEnvelope as an entry; its nodes are checked lazily, when looked up."""
    if not isinstance(data, dict):
        raise InvalidRecord("expected a JSON object")
    if not _is_text(data.get("workflow_name")):
        raise InvalidRecord("workflow_name: expected a string without control characters")
    root = data.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("children"), dict):
        raise InvalidRecord("root: expected a trie node")
    if not isinstance(root.get("predictions_by_call_index"), dict):
        raise InvalidRecord("root.predictions_by_call_index: expected an object")
    return TrieEntry(data, _timestamp_s(data, "generated_at"))
