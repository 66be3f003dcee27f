"""Record shapes: RunRecord in (SPEC 2), hints and tries out (SPEC 3), timestamps."""

from worker.models.fast_runs import parse_run
from worker.models.outputs import (
    Accuracy,
    AgentHints,
    HintsRecord,
    Metrics,
    Prediction,
    TrieEnvelope,
    TrieNode,
    dumps,
)
from worker.models.run_view import Call, Run
from worker.models.runs import UINT32_MAX, CallRecord, RunRecord

__all__ = [
    "UINT32_MAX",
    "Accuracy",
    "AgentHints",
    "Call",
    "CallRecord",
    "HintsRecord",
    "Metrics",
    "Prediction",
    "Run",
    "RunRecord",
    "TrieEnvelope",
    "TrieNode",
    "dumps",
    "parse_run",
]
