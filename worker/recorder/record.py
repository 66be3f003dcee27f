"""A run being recorded and its calls: what the agent's code touches, and the record they make.

`Run` and `Call` (call.py) are plain objects with `end()` methods, usable as context
managers (`with` and `async with`) or driven explicitly with timestamps (a gateway that times
calls itself: `run.add_call(...)`, `run.end(ended_at=...)`). When a run ends its record is
encoded once, as SPEC 9 wants it (section 2's RunRecord, calls in start order, UTC timestamps
with nine fraction digits, absent fields left out), and handed to the recorder's sink; the
bytes never change afterwards, so every retry sends the same bytes. Values the worker would
refuse are refused when given (checks.py).

Times measured here (no explicit timestamp) come from one wall-clock reading when the run
starts plus the monotonic clock: a clock step during a run never makes an `ended_at` earlier
than its `started_at`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol
from uuid import UUID

import orjson

from worker.models.timestamps import format_timestamp_ns
from worker.recorder.call import CALL_KINDS, Call, CallKind
from worker.recorder.checks import check_name
from worker.recorder.errors import RunEndedError
from worker.recorder.timestamps import TimestampInput, to_ns
from worker.recorder.uuid7 import uuid7

log = logging.getLogger(__name__)


class RunSink(Protocol):
    """Where finished runs go (the `RunRecorder`)."""

    record_payloads: bool

    def submit(self, run: Run, record: bytes) -> None: ...


class Run:
    """One agent run: made by `RunRecorder.run()`, recorded when it ends.

    `id` (a UUIDv7) is fixed when the run starts. Calls may be started from any thread or
    task; they are recorded in the order they started."""

    __slots__ = (
        "_calls",
        "_lock",
        "_mono0",
        "_ordered",
        "_record",
        "_sink",
        "_wall0",
        "agent_id",
        "ended_at",
        "id",
        "started_at",
    )

    def __init__(
        self,
        sink: RunSink,
        agent_id: str,
        *,
        run_id: UUID | str | None = None,
        started_at: TimestampInput | None = None,
    ) -> None:
        self._sink = sink
        self.agent_id = check_name(agent_id, "agent_id", allow_empty=False)
        if run_id is None:
            self.id = uuid7()
        elif isinstance(run_id, UUID):
            self.id = run_id
        else:
            try:
                self.id = UUID(str(run_id))
            except ValueError:
                raise ValueError(f"run_id {run_id!r} is not a UUID") from None
        self._mono0 = time.monotonic_ns()
        self._wall0 = time.time_ns()
        #: nanoseconds since the Unix epoch
        self.started_at = self._wall0 if started_at is None else to_ns(started_at, "started_at")
        self.ended_at: int | None = None
        self._calls: list[Call] = []
        self._ordered = True
        self._record: bytes | None = None
        self._lock = threading.Lock()

    @property
    def ended(self) -> bool:
        return self._record is not None

    @property
    def calls(self) -> list[Call]:
        """The calls so far, in start order (a copy)."""
        with self._lock:
            return sorted(self._calls, key=_started_at) if not self._ordered else list(self._calls)

    def now_ns(self) -> int:
        """The run's clock: its start's wall time plus monotonic time elapsed since."""
        return self._wall0 + (time.monotonic_ns() - self._mono0)

    @property
    def record_payloads(self) -> bool:
        """Whether its calls keep their payloads (the recorder's `record_payloads`)."""
        return self._sink.record_payloads

    def end_call(self, call: Call, ns: int) -> None:
        """End one of its calls at `ns` (for `Call.end`): the first end counts, and none
        once the run has ended (its record was made without it)."""
        with self._lock:
            if self._record is not None:
                log.warning(
                    "call %r ended after its run %s had ended: recorded without ended_at",
                    call.name,
                    self.id,
                )
                return
            if call.ended_at is None:
                call.ended_at = ns

    def llm_call(
        self,
        name: str,
        *,
        model_name: str | None = None,
        started_at: TimestampInput | None = None,
    ) -> Call:
        """Start an LLM call now (or at `started_at`); end it with `with` or `call.end()`."""
        call = self.start_call("llm", name, started_at=started_at)
        if model_name is not None:
            call.set_model_name(model_name)
        return call

    def tool_call(self, name: str, *, started_at: TimestampInput | None = None) -> Call:
        """Start a tool call now (or at `started_at`); end it with `with` or `call.end()`."""
        return self.start_call("tool", name, started_at=started_at)

    def start_call(
        self, kind: CallKind, name: str, *, started_at: TimestampInput | None = None
    ) -> Call:
        """Start a call of `kind` ("llm" or "tool")."""
        if kind not in CALL_KINDS:
            raise ValueError(f"kind must be 'llm' or 'tool', got {kind!r}")
        name = check_name(name, "call name")
        ns = self.now_ns() if started_at is None else to_ns(started_at, "started_at")
        call = Call(self, kind, name, ns)
        self._append(call)
        return call

    def add_call(
        self,
        kind: CallKind,
        name: str,
        *,
        started_at: TimestampInput,
        ended_at: TimestampInput | None = None,
        output_tokens: int | None = None,
        prompt_tokens: int | None = None,
        total_tokens: int | None = None,
        model_name: str | None = None,
        tool_call_count: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        annotated_request: Mapping[str, Any] | None = None,
        annotated_response: Mapping[str, Any] | None = None,
    ) -> Call:
        """Add a call timed elsewhere (a gateway, a trace): every field given at once.

        Nothing is added when a value is invalid (ValueError names it)."""
        if kind not in CALL_KINDS:
            raise ValueError(f"kind must be 'llm' or 'tool', got {kind!r}")
        call = Call(self, kind, check_name(name, "call name"), to_ns(started_at, "started_at"))
        if ended_at is not None:
            end = to_ns(ended_at, "ended_at")
            if end < call.started_at:
                raise ValueError(
                    f"call {name!r}: ended_at ({end}) is earlier than started_at "
                    f"({call.started_at})"
                )
            call.ended_at = end
        call.set_usage(
            output_tokens=output_tokens, prompt_tokens=prompt_tokens, total_tokens=total_tokens
        )
        call.set_model_name(model_name)
        call.set_tool_call_count(tool_call_count)
        call.set_metadata(metadata)
        call.set_payloads(request=annotated_request, response=annotated_response)
        self._append(call)
        return call

    def _append(self, call: Call) -> None:
        with self._lock:
            if self._record is not None:
                raise RunEndedError(f"run {self.id} has ended; call {call.name!r} not added")
            calls = self._calls
            if calls and call.started_at < calls[-1].started_at:
                self._ordered = False
            calls.append(call)

    def end(self, ended_at: TimestampInput | None = None) -> None:
        """End the run now (or at `ended_at`) and hand its record to the recorder.

        Raises RunNotRecordedError (SpoolFullError, RecordTooLargeError) when the recorder
        cannot keep it, RecorderClosedError after `close()`. Ending twice does nothing."""
        if ended_at is None:
            ns = max(self.now_ns(), self.started_at)
        else:
            ns = to_ns(ended_at, "ended_at")
            if ns < self.started_at:
                raise ValueError(
                    f"run {self.id}: ended_at ({ns}) is earlier than started_at ({self.started_at})"
                )
        with self._lock:
            if self._record is not None:
                return
            self.ended_at = ns
            self._record = record = self._encode()
        self._sink.submit(self, record)

    @property
    def record(self) -> bytes | None:
        """The record's JSON bytes once the run has ended (what is sent), else None."""
        return self._record

    def _encode(self) -> bytes:
        calls = self._calls
        if not self._ordered:
            calls = sorted(calls, key=_started_at)  # stable: equal starts keep their order
        record: dict[str, Any] = {
            "id": str(self.id),
            "agent_id": self.agent_id,
            "calls": [call.to_dict() for call in calls],
            "started_at": format_timestamp_ns(self.started_at),
        }
        if self.ended_at is not None:
            record["ended_at"] = format_timestamp_ns(self.ended_at)
        return orjson.dumps(record)

    def _end_on_exit(self, exc: BaseException | None) -> None:
        if exc is None:
            self.end()
            return
        try:  # the agent's own exception wins; a recording failure is logged, not raised
            self.end()
        except Exception:
            log.exception("run %s of %r could not be recorded", self.id, self.agent_id)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end_on_exit(exc)

    async def __aenter__(self) -> Run:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end_on_exit(exc)

    def __repr__(self) -> str:
        state = "ended" if self.ended else "open"
        return f"Run({self.agent_id!r}, id={self.id}, calls={len(self._calls)}, {state})"


def _started_at(call: Call) -> int:
    return call.started_at
