"""`/healthz` asks for a restart once no offset can be committed again (no broker; the
service is built inside a running loop, as `run` builds it)."""

from __future__ import annotations

from pathlib import Path

from aiokafka.errors import OutOfOrderSequenceNumber

from worker.kafka.topics import TopicLayout
from worker.settings import Settings
from worker.stream.service import StreamService


def service(tmp_path: Path) -> StreamService:
    settings = Settings(bootstrap_servers="127.0.0.1:1", state_dir=tmp_path / "state")
    return StreamService(settings, TopicLayout(partitions=2))


async def test_healthy_until_a_send_the_offsets_depend_on_failed(tmp_path: Path) -> None:
    svc = service(tmp_path)
    assert svc.healthy() == (True, "running")
    svc.records.sends.failure = RuntimeError("delivery timed out")
    healthy, why = svc.healthy()
    assert not healthy and "delivery timed out" in why


async def test_a_failed_changelog_send_also_asks_for_a_restart(tmp_path: Path) -> None:
    svc = service(tmp_path)
    svc.table.failure = RuntimeError("changelog gone")
    healthy, why = svc.healthy()
    assert not healthy and "changelog gone" in why


async def test_an_output_producer_that_cannot_send_again_asks_for_a_restart(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path)
    svc.publisher.producer_lost = OutOfOrderSequenceNumber()
    healthy, why = svc.healthy()
    assert not healthy and "OutOfOrderSequenceNumber" in why
