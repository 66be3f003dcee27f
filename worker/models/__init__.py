"""Record shapes: RunRecord in (SPEC 2), hints and tries out (SPEC 3), timestamps."""

from worker.models.outputs import (
    AgentHints,
    HintsRecord,
    Metrics,
    Prediction,
    TrieEnvelope,
    TrieNode,
    dumps,
)
from worker.models.runs import UINT32_MAX, CallRecord, RunRecord, parse_run

__all__ = [
    "UINT32_MAX",
    "AgentHints",
    "CallRecord",
    "HintsRecord",
    "Metrics",
    "Prediction",
    "RunRecord",
    "TrieEnvelope",
    "TrieNode",
    "dumps",
    "parse_run",
]
