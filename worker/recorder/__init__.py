"""Agent-side recording of runs (SPEC 9): `from worker.recorder import RunRecorder`.

Imports neither faust nor RocksDB. The adapters `worker.recorder.nemo_relay` and
`worker.recorder.otel` import their third-party packages only when imported themselves.
See docs/recording.md.
"""

from worker.recorder.call import Call
from worker.recorder.errors import (
    RecorderClosedError,
    RecorderError,
    RecordTooLargeError,
    RunEndedError,
    RunNotRecordedError,
    SpoolFullError,
    SpoolLockedError,
)
from worker.recorder.record import Run
from worker.recorder.recorder import RecorderStats, RunRecorder
from worker.recorder.uuid7 import uuid7

__all__ = [
    "Call",
    "RecordTooLargeError",
    "RecorderClosedError",
    "RecorderError",
    "RecorderStats",
    "Run",
    "RunEndedError",
    "RunNotRecordedError",
    "RunRecorder",
    "SpoolFullError",
    "SpoolLockedError",
    "uuid7",
]
