"""One LLM or tool call of a run being recorded, and its part of the run's record.

A call is made by its run (`Run.llm_call`, `tool_call`, `start_call`, `add_call`) and
knows the run only as a `CallOwner`: its clock, whether payloads are kept, and the end
of a call, which the run decides under its lock (a call ending after its run is not
recorded with `ended_at`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Protocol

import orjson

from worker.models.timestamps import format_timestamp_ns
from worker.recorder.checks import check_name, check_uint32, json_object
from worker.recorder.timestamps import TimestampInput, to_ns

CallKind = Literal["llm", "tool"]
CALL_KINDS = ("llm", "tool")


class CallOwner(Protocol):
    """What a call needs of its run (`Run`)."""

    @property
    def record_payloads(self) -> bool: ...

    def now_ns(self) -> int: ...

    def end_call(self, call: Call, ns: int) -> None: ...


#: CallRecord fields written as they are, when set
_OPTIONAL_FIELDS = (
    "output_tokens",
    "prompt_tokens",
    "total_tokens",
    "model_name",
    "tool_call_count",
    "metadata_snapshot",
    "annotated_request",
    "annotated_response",
)


class Call:
    """One LLM or tool call of a run. Started when made; `end()` (or leaving `with`) ends it."""

    __slots__ = (
        "_run",
        "annotated_request",
        "annotated_response",
        "ended_at",
        "kind",
        "metadata_snapshot",
        "model_name",
        "name",
        "output_tokens",
        "prompt_tokens",
        "started_at",
        "tool_call_count",
        "total_tokens",
    )

    def __init__(self, run: CallOwner, kind: CallKind, name: str, started_at: int) -> None:
        self._run = run
        self.kind = kind
        self.name = name
        #: nanoseconds since the Unix epoch
        self.started_at = started_at
        self.ended_at: int | None = None
        self.output_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.total_tokens: int | None = None
        self.model_name: str | None = None
        self.tool_call_count: int | None = None
        self.metadata_snapshot: orjson.Fragment | None = None
        self.annotated_request: orjson.Fragment | None = None
        self.annotated_response: orjson.Fragment | None = None

    def set_usage(
        self,
        *,
        output_tokens: int | None = None,
        prompt_tokens: int | None = None,
        total_tokens: int | None = None,
    ) -> Call:
        """Token counts from the response's usage (each an int in 0..2^32-1, or None)."""
        self.output_tokens = check_uint32(output_tokens, "output_tokens")
        self.prompt_tokens = check_uint32(prompt_tokens, "prompt_tokens")
        self.total_tokens = check_uint32(total_tokens, "total_tokens")
        return self

    def set_model_name(self, model_name: str | None) -> Call:
        """The model that answered (the response's `model`)."""
        self.model_name = None if model_name is None else check_name(model_name, "model_name")
        return self

    def set_tool_call_count(self, count: int | None) -> Call:
        """How many tool calls the response asked for."""
        self.tool_call_count = check_uint32(count, "tool_call_count")
        return self

    def set_metadata(self, metadata: Mapping[str, Any] | None) -> Call:
        """`metadata_snapshot`: a JSON object the caller chooses to attach."""
        self.metadata_snapshot = None if metadata is None else json_object(metadata, "metadata")
        return self

    def set_payloads(
        self,
        *,
        request: Mapping[str, Any] | None = None,
        response: Mapping[str, Any] | None = None,
    ) -> Call:
        """`annotated_request` / `annotated_response` (prompts and answers).

        Kept only when the recorder was made with `record_payloads=True` (SPEC 9: left out
        unless asked for); otherwise ignored without encoding them."""
        if self._run.record_payloads:
            if request is not None:
                self.annotated_request = json_object(request, "annotated_request")
            if response is not None:
                self.annotated_response = json_object(response, "annotated_response")
        return self

    def end(self, ended_at: TimestampInput | None = None) -> None:
        """End the call now, or at `ended_at` (ns since the epoch or an aware datetime).

        Ending a call twice keeps the first end. A call that ends after its run has ended is
        already recorded without `ended_at`; a warning says so."""
        run = self._run
        if ended_at is None:
            ns = max(run.now_ns(), self.started_at)  # a start given explicitly may be ahead
        else:
            ns = to_ns(ended_at, "ended_at")
            if ns < self.started_at:
                raise ValueError(
                    f"call {self.name!r}: ended_at ({ns}) is earlier than started_at "
                    f"({self.started_at})"
                )
        run.end_call(self, ns)

    def to_dict(self) -> dict[str, Any]:
        """The call as SPEC 2's CallRecord (JSON-ready: timestamps formatted, absent left out)."""
        item: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "started_at": format_timestamp_ns(self.started_at),
        }
        if self.ended_at is not None:
            item["ended_at"] = format_timestamp_ns(self.ended_at)
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                item[name] = value
        return item

    def __enter__(self) -> Call:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end()  # a call that raised still happened: it is recorded

    async def __aenter__(self) -> Call:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end()

    def __repr__(self) -> str:
        return f"Call({self.kind!r}, {self.name!r}, started_at={self.started_at})"
