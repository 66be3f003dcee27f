"""The recorder's sending settings, given to each part of the sender."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SenderConfig:
    topic: str
    #: AIOKafkaProducer's keyword arguments (connection, security, batching options)
    producer_kwargs: dict[str, Any]
    max_segment_runs: int = 1000
    max_segment_bytes: int = 1 << 20
    max_inflight_segments: int = 4
    #: a run still unacknowledged this long after reaching the disk counts as spooled
    spooled_after_s: float = 1.0
    retry_backoff_s: float = 0.5
    max_retry_backoff_s: float = 5.0

    def next_backoff(self, backoff: float) -> float:
        """The pause after `backoff`: twice as long, up to `max_retry_backoff_s`."""
        return min(backoff * 2, self.max_retry_backoff_s)
