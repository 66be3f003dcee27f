"""The router client: view, call context, resolution and rendering behind one object.

    async with HintsClient("kafka:9092", profile="dynamo") as client:
        await client.wait_ready(30)                # optional: hints only flow once loaded
        resolution = client.hints_for(agent_id, run_id, call_name)
        rendering = client.render(resolution, body, request_headers)
        # body (a dict) now carries the hints; add rendering.headers to the request

`hints_for` never blocks and never raises for unknown agents: while the view is loading it
answers source `none` (requests pass without hints), and calls are counted all the same.
Call `call_finished` with the same names once a call's response is complete: a call that
arrives while another of its run and name is in flight joins that call's fan-out group and
gets the same resolution and priority (`fanout`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.client.call_context import CallCounter
from worker.client.fanout import FanOutGroups
from worker.client.priority import PriorityPolicy
from worker.client.profiles import Rendering, render
from worker.client.resolution import MAX_REMEMBERED, Resolution, Resolver, Source
from worker.client.store import HintsEntry, TrieEntry
from worker.client.view import HintsView
from worker.settings import (
    DEFAULT_TOPICS,
    PROFILES,
    KafkaSettings,
    PrioritySettings,
    Profile,
    Settings,
)

#: sources decided by the agent's own entries alone (what `_resolve` may remember)
_MEMO_SOURCES: frozenset[Source] = frozenset(("trie", "agent_default"))


class HintsClient:
    """Everything a router, gateway or agent runtime embeds to attach hints to requests."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        hints_topic: str = DEFAULT_TOPICS.hints,
        tries_topic: str = DEFAULT_TOPICS.tries,
        kafka: KafkaSettings | None = None,
        profile: Profile = "dynamo",
        overwrite: bool = False,
        scale: int = 5,
        max_age_s: float = 0.0,
        min_runs: int = 0,
        min_osl_coverage: float = 0.0,
        min_scored: int = 20,
        fallback: Mapping[str, Any] | None = None,
        run_idle_s: float = 600.0,
        max_runs: int = 100_000,
        priority: PrioritySettings | None = None,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
        self.profile: Profile = profile
        self.overwrite = overwrite
        self.view = HintsView(
            bootstrap_servers, hints_topic=hints_topic, tries_topic=tries_topic, kafka=kafka
        )
        self.calls = CallCounter(run_idle_s, max_runs)
        self.resolver = Resolver(
            self.view.store,
            scale=scale,
            max_age_s=max_age_s,
            min_runs=min_runs,
            min_osl_coverage=min_osl_coverage,
            min_scored=min_scored,
            fallback=fallback,
        )
        self.policy = PriorityPolicy(priority or PrioritySettings(), self.view.store)
        self.fanouts: FanOutGroups[Resolution] = FanOutGroups(run_idle_s, max_runs)
        #: (agent, name, call index) -> (the store's hints and trie entries for the agent,
        #: the resolution, the policy's fixed part): see `_resolve`
        self._decided: dict[
            tuple[str, str | None, int | None],
            tuple[HintsEntry | None, TrieEntry | None, Resolution, Any],
        ] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> HintsClient:
        """A client configured like the worker: topics, Kafka security, learner scale, and
        the `[gateway]` section's profile, staleness, accuracy floor, fallback and run idle
        time."""
        gateway = settings.gateway
        fallback = gateway.fallback_hints
        return cls(
            settings.bootstrap_servers,
            hints_topic=settings.topics.hints,
            tries_topic=settings.topics.tries,
            kafka=settings.kafka,
            profile=gateway.profile,
            overwrite=gateway.overwrite,
            scale=settings.learner.scale,
            max_age_s=gateway.max_age_s,
            min_runs=gateway.min_runs,
            min_osl_coverage=gateway.min_osl_coverage,
            min_scored=gateway.min_scored,
            fallback=fallback.model_dump() if fallback is not None else None,
            run_idle_s=gateway.run_idle_s,
            max_runs=gateway.max_runs,
            priority=gateway.priority,
        )

    @property
    def ready(self) -> bool:
        return self.view.ready

    async def start(self) -> None:
        await self.view.start()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        return await self.view.wait_ready(timeout)

    async def stop(self) -> None:
        await self.view.stop()

    async def __aenter__(self) -> HintsClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def hints_for(
        self, agent_id: str, run_id: str | None, name: str | None, model: str | None = None
    ) -> Resolution:
        """Count this call of the run, resolve its hints (SPEC 8) and choose its priority;
        `model` (the request's) picks the prior of an agent without history.

        Without a run id or a call name the call cannot be placed in a run: only the
        agent-wide sources (default hints, prior, fallback) apply, and it joins no fan-out
        group. A call of a run and name with a call still in flight gets that call's
        resolution (its own call index): pair each such call with `call_finished`.
        """
        if run_id is None or name is None:
            return self._resolve(agent_id, name, None, 0.0, model)
        index, run_age_s = self.calls.next_call_and_age(agent_id, run_id, name)
        key = (agent_id, run_id, name)
        joined, group = self.fanouts.join(key)
        if joined and group is not None:  # (a namedtuple's _replace costs a microsecond)
            return Resolution(group.source, group.hints, index, group.skipped, group.priority)
        resolution = self._resolve(agent_id, name, index, run_age_s, model)
        self.fanouts.open(key, resolution)
        return resolution

    def call_finished(self, agent_id: str, run_id: str | None, name: str | None) -> None:
        """A call counted by `hints_for` is complete (its response ended, or it failed)."""
        if run_id is not None and name is not None:
            self.fanouts.finished((agent_id, run_id, name))

    def _resolve(
        self,
        agent_id: str,
        name: str | None,
        index: int | None,
        run_age_s: float,
        model: str | None,
    ) -> Resolution:
        """Resolution and priority. From the agent's own entries (`trie`, `agent_default`)
        both follow from those entries alone (and the time, when `max_age_s` is set): what
        they decide for a call name and index is remembered while the entries are the same
        objects (a record replaces its entry). The other sources depend on the fleet's
        priors and the model too, so they are resolved each time."""
        if not self.view.ready:
            return Resolution("none", None, index)
        store = self.view.store
        hints, trie = store.hints.get(agent_id), store.tries.get(agent_id)
        key = (agent_id, name, index)
        known = self._decided.get(key)
        if known is not None and known[0] is hints and known[1] is trie:
            r, part = known[2], known[3]
        else:
            r = self.resolver.resolve(agent_id, name, index, model)
            part = self.policy.fixed_part(agent_id, name, index, r.hints)
            if not self.resolver.max_age_s and r.source in _MEMO_SOURCES:
                if len(self._decided) >= MAX_REMEMBERED:
                    self._decided.clear()  # names are the callers': never an unbounded set
                self._decided[key] = (hints, trie, r, part)
        priority = self.policy.with_age(part, run_age_s)
        return r if priority is None else Resolution(r.source, r.hints, index, r.skipped, priority)

    def render(
        self, resolution: Resolution, body: dict[str, Any] | None, headers: Mapping[str, str]
    ) -> Rendering:
        """Write the resolved hints and priority into `body` (in place); headers to add."""
        return render(
            self.profile,
            resolution.hints,
            body,
            headers,
            overwrite=self.overwrite,
            priority=resolution.priority,
        )
