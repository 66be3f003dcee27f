"""Errors the recorder raises to its caller; all derive from `RecorderError`."""

from __future__ import annotations

from uuid import UUID


class RecorderError(Exception):
    """Base class of every error the recorder raises on purpose."""


class RunNotRecordedError(RecorderError):
    """A finished run that the recorder could not accept: it is NOT in the spool.

    `run_id` and `record` (the exact JSON bytes) let the caller keep it elsewhere."""

    def __init__(self, message: str, run_id: UUID, record: bytes) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.record = record


class SpoolFullError(RunNotRecordedError):
    """The spool holds `max_spool_bytes` of unsent runs already (the broker is away)."""


class RecordTooLargeError(RunNotRecordedError):
    """The run's JSON is larger than `max_record_bytes`: no broker would take it."""


class RecorderClosedError(RecorderError, RuntimeError):
    """The recorder was closed; runs ending afterwards cannot be recorded."""


class RunEndedError(RecorderError, RuntimeError):
    """A call was started on, or added to, a run that has already ended."""


class SpoolLockedError(RecorderError):
    """Another live recorder (possibly in another process) uses the same spool directory."""
