"""Create missing topics with the right configs at start; refuse non-compacted outputs."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from worker.errors import TopicError
from worker.kafka.clients import client_kwargs
from worker.settings import Settings

log = logging.getLogger(__name__)

#: error code Kafka returns when a topic being created already exists (a racing worker)
TOPIC_ALREADY_EXISTS = 36
#: ... and for a topic it does not know (yet: a topic just created takes a moment)
UNKNOWN_TOPIC = 3
CREATED_VISIBLE_S = 10.0


@dataclass(frozen=True)
class TopicLayout:
    """What the worker found or created: the partition count of its input topic, each
    topic's own count, and the largest record each output topic accepts
    (`max.message.bytes`)."""

    partitions: int
    created: tuple[str, ...] = ()
    max_message_bytes: dict[str, int] = field(default_factory=dict)
    partition_counts: dict[str, int] = field(default_factory=dict)

    def partitions_of(self, topic: str) -> int:
        """The partition count of `topic` (the input topic's when not known)."""
        return self.partition_counts.get(topic, self.partitions)

    def record_limit(self, topic: str, default: int = 1_048_588) -> int:
        """The largest record batch `topic` accepts (the broker's default when unknown)."""
        return self.max_message_bytes.get(topic, default)


def _partition_counts(metadata: list[dict[str, Any]]) -> dict[str, int]:
    counts = {}
    for topic in metadata:
        if topic["error_code"] == 0:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def _topic_configs(
    admin: AIOKafkaAdminClient, topics: list[str], names: tuple[str, ...]
) -> dict[str, dict[str, str]]:
    """The configs `names` of each topic (as the broker reports them, defaults included)."""
    if not topics:
        return {}
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict.fromkeys(names))
        for topic in topics
    ]
    deadline = time.monotonic() + CREATED_VISIBLE_S
    while True:
        found: dict[str, dict[str, str]] = {}
        unknown: list[str] = []
        for response in await admin.describe_configs(resources):
            for resource in response.resources:
                error_code, _msg, _type, topic, entries = resource[:5]
                if error_code == UNKNOWN_TOPIC and time.monotonic() < deadline:
                    unknown.append(topic)  # just created: not yet known to every broker
                elif error_code:
                    raise TopicError(f"cannot describe topic {topic}: error {error_code} {_msg}")
                else:
                    found[topic] = {e[0]: e[1] or "" for e in entries if e[0] in names}
        if not unknown:
            return found
        await asyncio.sleep(0.1)


async def _create(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> None:
    if not topics:
        return
    response = await admin.create_topics(topics)
    for item in response.topic_errors:
        name, code = item[0], item[1]
        if code not in (0, TOPIC_ALREADY_EXISTS):
            raise TopicError(f"cannot create topic {name}: error {code} {item[2:]}")
        log.info("created topic %s", name, extra={"topic": name})


async def ensure_topics(admin: AIOKafkaAdminClient, settings: Settings) -> TopicLayout:
    """Create what is missing, check what exists; return the input partition count."""
    t = settings.topics
    compacted = [t.hints, t.tries]
    deleting = [t.dlq, t.rekey_topic]
    names = [t.runs, *compacted, *deleting]
    counts = _partition_counts(await admin.describe_topics(names))
    missing = [name for name in names if name not in counts]
    if missing and not t.create:
        raise TopicError(f"topics {missing} do not exist and topics.create is false")
    partitions = counts.get(t.runs, t.partitions)
    new = []
    for name in missing:
        policy = {"cleanup.policy": "compact" if name in compacted else "delete"}
        new.append(NewTopic(name, partitions, t.replication_factor, topic_configs=policy))
    await _create(admin, new)
    configs = await _topic_configs(
        admin, [*compacted, *deleting], ("cleanup.policy", "max.message.bytes")
    )
    for name in compacted:
        cleanup = configs.get(name, {}).get("cleanup.policy", "")
        if "compact" not in cleanup.split(","):
            raise TopicError(
                f"output topic {name} exists with cleanup.policy={cleanup!r}; it must be "
                f"compacted (kafka-configs --alter --entity-type topics --entity-name {name} "
                "--add-config cleanup.policy=compact)"
            )
    if counts.get(t.rekey_topic, partitions) != partitions:
        raise TopicError(
            f"topic {t.rekey_topic} has {counts[t.rekey_topic]} partitions but {t.runs} has "
            f"{partitions}; they must match (delete {t.rekey_topic} to let the worker recreate it)"
        )
    limits = {
        name: int(values["max.message.bytes"])
        for name, values in configs.items()
        if values.get("max.message.bytes", "").isdigit()
    }
    counts.update(dict.fromkeys(missing, partitions))
    return TopicLayout(partitions, tuple(missing), limits, counts)


async def prepare_topics(settings: Settings, timeout_s: float = 30.0) -> TopicLayout:
    """`ensure_topics` with an admin client of its own, built from the settings."""
    admin = AIOKafkaAdminClient(
        **client_kwargs(settings.bootstrap_servers, settings.kafka), request_timeout_ms=15_000
    )
    try:
        await asyncio.wait_for(admin.start(), timeout=timeout_s)
        return await ensure_topics(admin, settings)
    finally:
        await admin.close()
