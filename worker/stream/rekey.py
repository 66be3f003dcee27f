"""Runs that arrived on a partition other than their agent's go to that partition, once.

Each agent's state lives in exactly one partition: `murmur2(agent_id) % N`, what Kafka's
default partitioner picks for key = agent id. A run without a key, with another key, or from
a producer with another partitioner is re-sent unchanged to the internal rekey topic, on its
agent's partition, and learned there.
"""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2


@functools.lru_cache(maxsize=1 << 16)
def partition_for(agent_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for key `agent_id` (murmur2).

    Cached: aiokafka's murmur2 is pure Python (~8 us a key, 2% of a worker's time), and an
    agent's runs keep coming."""
    return int(murmur2(agent_id.encode()) & 0x7FFFFFFF) % partitions
