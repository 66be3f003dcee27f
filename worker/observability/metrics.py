"""Every Prometheus metric the streaming worker exports, on a registry of its own."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from worker.observability.accuracy_metrics import AccuracyMetrics
from worker.observability.loop_metrics import LoopCounter, LoopHistogram

REJECT_REASONS = ("invalid_json", "schema", "too_large", "limits")


class WorkerMetrics:
    """Every metric the worker exports, on its own registry (no process-global state)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total
        # updated for every record on the event loop: lock-free (see loop_metrics)
        self.consumed = LoopCounter(
            "agent_hints_runs_consumed", "Records read from the runs and rekey topics", r
        )
        self.learned = LoopCounter("agent_hints_runs_learned", "Runs folded into agent state", r)
        self.accuracy = AccuracyMetrics(r)
        self.duplicates = Counter(
            "agent_hints_runs_duplicate", "Runs skipped because their id was learned", registry=r
        )
        self.rejected = Counter(
            "agent_hints_runs_rejected", "Records sent to the DLQ", ["reason"], registry=r
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.rekeyed = Counter(
            "agent_hints_runs_rekeyed",
            "Runs re-sent to the rekey topic because their partition did not match the agent",
            registry=r,
        )
        self.processing = LoopHistogram(
            "agent_hints_record_processing_seconds",
            "Time to process one record (decode, check, learn)",
            (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.5),
            r,
        )
        lag_buckets = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60)
        self.end_to_publish = Histogram(
            "agent_hints_run_end_to_publish_seconds",
            "From a run's ended_at to its agent's hints being published",
            buckets=lag_buckets,
            registry=r,
        )
        self.consume_to_publish = Histogram(
            "agent_hints_consume_to_publish_seconds",
            "From a run being consumed to its agent's hints being published",
            buckets=lag_buckets,
            registry=r,
        )
        self.published = Counter(
            "agent_hints_published",
            "Records published: output=hints (HintsRecord) or tries (TrieEnvelope)",
            ["output"],
            registry=r,
        )
        self.publish_failures = Counter(
            "agent_hints_publish_failures",
            "Records of an agent that could not be built or sent; the agent is retried alone",
            ["output"],
            registry=r,
        )
        for output in ("hints", "tries"):
            self.published.labels(output)
            self.publish_failures.labels(output)
        self.publish_failing = Gauge(
            "agent_hints_publish_failing_agents",
            "Agents whose last publish failed, waiting for a retry",
            registry=r,
        )
        self.tries_interval = Gauge(
            "agent_hints_tries_interval_seconds",
            "The interval between tries cycles now: tries_interval_s, or longer when trie "
            "builds took more than tries_budget of it",
            registry=r,
        )
        self.publish_skipped = Counter(
            "agent_hints_publish_unchanged",
            "Publishes skipped because the value equals the last one published",
            ["output"],
            registry=r,
        )
        for output in ("hints", "tries"):
            self.publish_skipped.labels(output)
        self.agents = Gauge(
            "agent_hints_agents_cached", "Agents whose state this worker holds", registry=r
        )
        self.agents_decoded = Gauge(
            "agent_hints_agents_decoded",
            "Agents held decoded (being learned or published); the others are held serialized",
            registry=r,
        )
        self.state_bytes = Gauge(
            "agent_hints_state_bytes",
            "Estimated memory of the agent states held (bounded by state_cache_bytes)",
            registry=r,
        )
        self.state_cache_limit = Gauge(
            "agent_hints_state_cache_limit_bytes",
            "The configured bound on agent_hints_state_bytes (state_cache_bytes)",
            registry=r,
        )
        self.state_decodes = Counter(
            "agent_hints_state_decodes",
            "Agent states decoded for a run or a publish, from the state cache's serialized "
            "copy (source=cache) or read from the state table (source=table)",
            ["source"],
            registry=r,
        )
        self.state_serialized = Counter(
            "agent_hints_state_serialized",
            "Decoded agent states serialized, by why: to keep the decoded ones within their "
            "share of state_cache_bytes (bytes) or within 8,192 (count), or unused for 30 "
            "commits (idle)",
            ["reason"],
            registry=r,
        )
        for source in ("cache", "table"):
            self.state_decodes.labels(source)
        for reason in ("bytes", "count", "idle"):
            self.state_serialized.labels(reason)
        self.state_writes = Counter(
            "agent_hints_state_writes", "Records written to the state table", registry=r
        )
        self.state_written_bytes = Counter(
            "agent_hints_state_written_bytes",
            "Bytes (key + value) written to the state table and its changelog, by record: "
            "delta, snapshot, run_ids, tombstone",
            ["record"],
            registry=r,
        )
        #: per counter, the running totals it was last advanced to (`_advance`)
        self._seen: dict[Counter, dict[str, int]] = {}
        self.consumer_lag = Gauge(
            "agent_hints_consumer_lag_records",
            "Records not yet processed (high watermark - next offset)",
            ["topic", "partition"],
            registry=r,
        )
        self.ready = Gauge(
            "agent_hints_ready", "1 when assigned partitions are recovered", registry=r
        )
        self.dlq_skipped = Counter(
            "agent_hints_dlq_replays_skipped",
            "Rejected records replayed after a crash and found already in the DLQ",
            registry=r,
        )
        self.dlq_truncated = Counter(
            "agent_hints_dlq_truncated",
            "Rejected records larger than the DLQ accepts, sent as a prefix with their size "
            "and SHA-256",
            registry=r,
        )
        self.errors = Counter(
            "agent_hints_errors",
            "Unexpected errors handled without stopping",
            ["where"],
            registry=r,
        )
        for where in ("process", "publish", "state_write"):  # series exist before the first
            self.errors.labels(where)

    def observe_state_writes(self, totals: dict[str, int]) -> None:
        """Advance `state_written_bytes` to the state cache's running totals."""
        self._advance(self.state_written_bytes, totals)

    def observe_state_cache(self, decodes: dict[str, int], serialized: dict[str, int]) -> None:
        """Advance `state_decodes` and `state_serialized` to the state cache's running totals."""
        self._advance(self.state_decodes, decodes)
        self._advance(self.state_serialized, serialized)

    def _advance(self, counter: Counter, totals: dict[str, int]) -> None:
        """Advance a counter with one label to running totals kept elsewhere."""
        seen = self._seen.setdefault(counter, {})
        for label, total in totals.items():
            increase = total - seen.get(label, 0)
            if increase > 0:
                counter.labels(label).inc(increase)
                seen[label] = total

    def render(self) -> bytes:
        return generate_latest(self.registry)
