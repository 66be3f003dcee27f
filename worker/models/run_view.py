"""Run and Call: the read-only shape of a SPEC 2 record, whichever decoder made it.

The learner reads runs through these protocols, so it takes the pydantic `RunRecord`
(tests, records built in code, the reference decoder) and the msgspec structs of
`fast_runs` (the worker's hot loop) alike: same attribute names, same value types,
timestamps as integer nanoseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol
from uuid import UUID


class Call(Protocol):
    """One LLM or tool call inside a run."""

    @property
    def kind(self) -> Literal["llm", "tool"]: ...
    @property
    def name(self) -> str: ...
    @property
    def started_at(self) -> int: ...
    @property
    def ended_at(self) -> int | None: ...
    @property
    def output_tokens(self) -> int | None: ...
    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def total_tokens(self) -> int | None: ...
    @property
    def model_name(self) -> str | None: ...
    @property
    def tool_call_count(self) -> int | None: ...
    @property
    def metadata_snapshot(self) -> dict[str, Any] | None: ...
    @property
    def annotated_request(self) -> dict[str, Any] | None: ...
    @property
    def annotated_response(self) -> dict[str, Any] | None: ...


class Run(Protocol):
    """One finished agent run: the unit the learner folds into an agent's state."""

    @property
    def id(self) -> UUID: ...
    @property
    def agent_id(self) -> str: ...
    @property
    def calls(self) -> Sequence[Call]: ...
    @property
    def started_at(self) -> int: ...
    @property
    def ended_at(self) -> int | None: ...
