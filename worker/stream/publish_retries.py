"""Agents whose last publish of an output (hints or tries) failed: each retried on its own,
with exponential backoff, so that one agent whose record cannot be sent never holds the
others back."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from worker.stream.state.entry import AgentEntry

log = logging.getLogger(__name__)

#: an agent whose publish failed is retried after this, doubling up to RETRY_MAX_S
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


@dataclass(slots=True)
class Failing:
    entry: AgentEntry
    attempts: int
    next_at: float
    error: str


class Retries:
    """Agents whose last publish of an output (hints or tries) failed, each retried alone
    with exponential backoff."""

    def __init__(self) -> None:
        self._failing: dict[tuple[str, str], Failing] = {}  # by (output, agent id)

    def __len__(self) -> int:
        """How many agents are failing (an output or both)."""
        return len({agent_id for _, agent_id in self._failing})

    def failed(
        self, output: str, agent_id: str, entry: AgentEntry, error: BaseException, now: float
    ) -> bool:
        """Note a failure; True when the agent's output was not failing before."""
        failing = self._failing.get((output, agent_id))
        if failing is not None and now < failing.next_at:  # a newer record, same attempt
            failing.error = repr(error)[:200]
            return False
        attempts = failing.attempts + 1 if failing else 1
        delay = min(RETRY_FIRST_S * 2 ** (attempts - 1), RETRY_MAX_S)
        failing = Failing(entry, attempts, now + delay, repr(error)[:200])
        self._failing[(output, agent_id)] = failing
        return attempts == 1

    def succeeded(self, output: str, agent_id: str) -> None:
        if self._failing.pop((output, agent_id), None) is not None:
            log.info("publishing %s of agent %s works again", output, agent_id)

    def due(self, now: float, skip: set[str]) -> list[tuple[str, AgentEntry]]:
        """Failing agents whose retry time has come (not already in `skip`), once each."""
        due: dict[str, AgentEntry] = {}
        for (_, agent_id), failing in self._failing.items():
            if failing.next_at <= now and agent_id not in skip:
                due[agent_id] = failing.entry
        return list(due.items())

    def describe(self) -> str | None:
        """For /healthz: how many agents fail, and one example."""
        if not self._failing:
            return None
        (output, agent_id), failing = next(iter(self._failing.items()))
        return (
            f"publishing failing for {len(self)} agent(s), retried with backoff; "
            f"e.g. {output} of {agent_id}: {failing.error}"
        )

    def clear(self) -> None:
        self._failing.clear()
