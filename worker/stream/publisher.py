"""Coalescing publisher: the latest hints and tries of each changed agent, on timers.

Hints (a few root statistics) go out every `publish_interval_ms` (and at each offset
commit, which waits for them); whole tries, which cost far more per agent to build, every
`tries_interval_s` (longer while the builds would take more than `tries_budget` of the
worker), each agent's runs coalesced into one build, paced (`pacing`) so that building them
never holds hints or runs back. A tries cycle notes how far each source
partition had been processed when it took its agents (`covered`): the checkpoint commits
offsets only up to there, so a run's offset is committed only once its trie is out.
Values equal to the last published one (ignoring `generated_at` / `updated_at`) are
skipped, except that an agent's last trie is never older than its last hints. HintsRecord
goes to the hints topic, the TrieEnvelope to the tries topic, both keyed by agent id.
Publishing is at-least-once: the topics are compacted "latest state", so re-publishing is
harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber, ProducerFenced

from worker.learner import LearnerConfig, state_hints, trie_dict
from worker.models import dumps
from worker.models.timestamps import now_rfc3339
from worker.observability.metrics import WorkerMetrics
from worker.settings import TopicSettings
from worker.stream.output_batches import OutputBatches
from worker.stream.pacing import Pacer
from worker.stream.publish_queue import PublishQueue
from worker.stream.publish_retries import Retries
from worker.stream.state.entry import AgentEntry
from worker.stream.state.store import StateStore

log = logging.getLogger(__name__)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


#: what a queued record is for: (which output, agent id, its entry)
Owner = tuple[str, str, AgentEntry]
#: a source (topic, partition)
Position = tuple[str, int]
#: errors after which the idempotent producer fails every later batch of the partition
#: (aiokafka does not reset its sequence numbers: aio-libs/aiokafka#1017): only a new
#: producer, that is a restart, sends again. It follows a batch that expired unsent, its
#: sequence number taken (no leader for 40 s: see `service.track_topics`).
PRODUCER_LOST = (OutOfOrderSequenceNumber, ProducerFenced)
#: the longest a tries budget stretches the tries interval to (unless tries_interval_s is
#: longer): it bounds how stale a per-call hint gets and how much a crash replays
TRIES_INTERVAL_MAX_S = 60.0


class Publisher:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        store: StateStore,
        to_publish: PublishQueue,
        config: LearnerConfig,
        topics: TopicSettings,
        metrics: WorkerMetrics,
        positions: Callable[[], dict[Position, int]],
    ) -> None:
        """`positions()`: the next offset of each source (topic, partition) processed so
        far, every record before it processed."""
        self.producer = producer
        self.store = store
        self.to_publish = to_publish
        self.positions = positions
        #: per source (topic, partition): every run before this offset has its trie out
        #: (the positions when the last completed tries cycle took its agents)
        self.covered: dict[Position, int] = {}
        self.config = config
        self.topics = topics
        self.metrics = metrics
        self._last_hints: dict[str, bytes] = {}
        self._last_trie: dict[str, bytes] = {}
        #: agents whose hints went out after their last trie: their next trie is sent even
        #: if unchanged, so that an agent's last trie is never older than its last hints (a
        #: trie built between a run and the hints of that run would otherwise stay the older)
        self._hints_newer: set[str] = set()
        self._tries_due: dict[str, AgentEntry] = {}  # changed since their trie was last sent
        self._hints_lock = asyncio.Lock()
        self._tries_lock = asyncio.Lock()
        #: when the last hints and tries cycles started, whoever ran them (the timers, a
        #: commit, a rebalance): the timers count from there
        self._hints_started = self._tries_started = 0.0
        self._tries_pacer: Pacer | None = None  # of the tries cycle under way
        self._partition_counts: dict[str, int] = {}
        self.retries = Retries()
        #: the first error that left the producer unable to send again (`PRODUCER_LOST`)
        self.producer_lost: BaseException | None = None
        self._built_s = 0.0  # seconds spent building tries, for ever (`tries_interval`)
        self._last_cycle_built_s = 0.0  # of the last completed tries cycle

    def _hints_record(self, agent_id: str, entry: AgentEntry) -> bytes | None:
        """The HintsRecord to send, or None when there are none yet or they are unchanged."""
        state = self.store.state(entry)
        hints = state_hints(state, self.config)
        if hints is None:
            return None
        runs = state.runs
        digest = _digest(dumps([hints, runs]))
        if self._last_hints.get(agent_id) == digest:
            self.metrics.publish_skipped.labels("hints").inc()
            return None
        self._last_hints[agent_id] = digest
        self._hints_newer.add(agent_id)
        record = {"agent_id": agent_id, "hints": hints, "runs": runs, "updated_at": now_rfc3339()}
        accuracy = state.recent.summary()  # changes only with `runs`: the digest covers it
        if accuracy is not None:
            record["accuracy"] = accuracy
        return dumps(record)

    def _trie_record(self, agent_id: str, entry: AgentEntry) -> bytes | None:
        """The TrieEnvelope to send, or None when it is unchanged.

        Serialized once: the digest covers everything but `generated_at`, which is then
        spliced in front of the same bytes."""
        began = time.perf_counter()
        trie = trie_dict(agent_id, self.store.state(entry), self.config)
        generated_at = trie.pop("generated_at")
        body = dumps(trie)
        self._built_s += time.perf_counter() - began
        digest = _digest(body)
        if self._last_trie.get(agent_id) == digest and agent_id not in self._hints_newer:
            self.metrics.publish_skipped.labels("tries").inc()
            return None
        self._last_trie[agent_id] = digest
        self._hints_newer.discard(agent_id)
        return b'{"generated_at":' + dumps(generated_at) + b"," + body[1:]

    async def publish_pending(self, share: float = 1.0) -> int:
        """Publish the hints of every changed agent and every trie due, the tries built with
        at most `share` of the loop (`pacing`: 1 at rebalances and shutdown, which wait for
        them); wait until the broker has them. Returns the agents whose hints were published."""
        published = await self.publish_hints()
        await self.publish_tries(share)
        return published

    async def publish_hints(self) -> int:
        """The hints of the agents changed since the last call (and of failing agents whose
        retry is due); their tries become due. Waits for the deliveries."""
        async with self._hints_lock:
            self._hints_started = time.monotonic()
            changes = self.to_publish.take()
            batch = [(change.agent_id, change.entry) for change in changes]
            batch += self.retries.due(time.monotonic(), {agent for agent, _ in batch})
            if not batch:
                return 0
            self._tries_due.update(batch)
            batches = self._batches()
            for agent_id, entry in batch:
                await self._queue(batches, "hints", agent_id, entry, self._hints_record)
            await self._settle(batches)
            now_mono, now_ns = time.monotonic(), time.time_ns()
            for change in changes:
                self.metrics.consume_to_publish.observe(now_mono - change.consumed_at)
                self.metrics.end_to_publish.observe(max(0.0, (now_ns - change.run_end_ns) / 1e9))
            return len(batch)

    async def publish_tries(self, share: float = 1.0) -> int:
        """The tries of every agent changed since their trie was last sent, built with at
        most `share` of the loop (`pacing`: runs keep being learned and hints keep leaving
        meanwhile). Waits for the deliveries."""
        if share >= 1 and self._tries_pacer is not None:
            self._tries_pacer.hurry()  # a rebalance or shutdown waits for the cycle under way
        async with self._tries_lock:
            self._tries_started = time.monotonic()
            # every run processed so far belongs to an agent due here: taken by a hints
            # cycle (then due), or still waiting for one
            marks = self.positions()
            for entry in self.to_publish.pending():
                self._tries_due.setdefault(entry.agent_id, entry)
            tries, self._tries_due = list(self._tries_due.items()), {}
            batches = self._batches()
            built_before = self._built_s
            self._tries_pacer = pacer = Pacer(share)
            try:
                for agent_id, entry in tries:
                    await pacer.tick()
                    await self._queue(batches, "tries", agent_id, entry, self._trie_record)
            finally:
                self._tries_pacer = None
            await self._settle(batches)  # a failed agent is retried alone, as for hints
            self.covered = marks
            self._last_cycle_built_s = self._built_s - built_before
            return len(tries)

    def _batches(self) -> OutputBatches[Owner]:
        return OutputBatches(self.producer, self._partitions)

    async def _partitions(self, topic: str) -> int:
        """The partition count of an output topic (asked once)."""
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = len(await self.producer.partitions_for(topic))
        return count

    async def _settle(self, batches: OutputBatches[Owner]) -> None:
        """Send and wait for the deliveries; the agents of a failed one are retried later."""
        for owners, error in await batches.send():
            for output, agent_id, entry in owners:
                if error is not None:
                    self._failed(output, agent_id, entry, error)
                else:
                    self.metrics.published.labels(output).inc()
                    self.retries.succeeded(output, agent_id)
        self.metrics.publish_failing.set(len(self.retries))

    async def _queue(
        self,
        batches: OutputBatches[Owner],
        output: str,
        agent_id: str,
        entry: AgentEntry,
        build: Callable[[str, AgentEntry], bytes | None],
    ) -> None:
        """Build one agent's record and queue it; a failure to build is that agent's alone."""
        topic = self.topics.hints if output == "hints" else self.topics.tries
        try:
            value = build(agent_id, entry)
            if value is None:
                return
            await batches.add(topic, agent_id.encode(), value, (output, agent_id, entry))
        except Exception as exc:  # a bug in building, a closed producer
            self._failed(output, agent_id, entry, exc)

    def _failed(self, output: str, agent_id: str, entry: AgentEntry, error: BaseException) -> None:
        """Forget what was sent for the agent (so it is built again) and retry it later."""
        (self._last_hints if output == "hints" else self._last_trie).pop(agent_id, None)
        self.metrics.publish_failures.labels(output).inc()
        if isinstance(error, PRODUCER_LOST) and self.producer_lost is None:
            self.producer_lost = error
            log.error(
                "the output producer cannot send again (its idempotent session is out of "
                "step with the broker); /healthz now asks for a restart",
                extra={"error": repr(error)[:500]},
            )
        first = self.retries.failed(output, agent_id, entry, error, time.monotonic())
        log.log(
            logging.ERROR if first else logging.DEBUG,
            "publishing %s of agent %s failed; retrying it alone, with backoff",
            output,
            agent_id,
            extra={"error": repr(error)[:500], "failing_agents": len(self.retries)},
        )

    def forget(self) -> None:
        """Forget what was last published (after losing partitions; re-publish is harmless),
        the agents waiting for a retry (their new owner publishes them), and how far tries
        cover the partitions (faust seeks them again)."""
        self.covered = {}
        self._last_hints.clear()
        self._last_trie.clear()
        self._hints_newer.clear()
        self.retries.clear()

    async def run_forever(
        self,
        hints_interval_s: float,
        tries_interval_s: float,
        share: Callable[[], float],
        tries_budget: float = 1.0,
    ) -> None:
        """The publish timers, each on its own so that building tries never holds the hints
        back. Tries are built once per `tries_interval` (a rebalance or shutdown publishes
        them too, and moves the timer back), with at most `share()` of the loop."""
        await asyncio.gather(
            self._every(
                lambda: hints_interval_s,
                self.publish_hints,
                lambda: self._hints_started,
                "hints",
            ),
            self._every(
                lambda: self.tries_interval(tries_interval_s, tries_budget),
                lambda: self.publish_tries(share()),
                lambda: self._tries_started,
                "tries",
            ),
        )

    def tries_interval(self, base_s: float, budget: float) -> float:
        """`base_s`, or longer when the last tries cycle's builds took more than `budget` of
        it: then as long as makes them `budget` of the interval (at most
        TRIES_INTERVAL_MAX_S). A fleet of many agents, each running now and then, pays a
        whole trie build per run at short intervals; a longer one coalesces its runs."""
        fitted = min(self._last_cycle_built_s / budget, TRIES_INTERVAL_MAX_S)
        interval = max(base_s, fitted)
        self.metrics.tries_interval.set(interval)
        return interval

    async def _every(
        self,
        interval_s: Callable[[], float],
        publish: Callable[[], Awaitable[int]],
        last_started: Callable[[], float],
        what: str,
    ) -> None:
        """Call `publish` `interval_s()` after its last cycle started (`last_started()`),
        for ever: a cycle run by someone else (a commit publishes hints too) moves the next
        one back, so nothing is built twice as often as needed."""
        while True:
            due = last_started() + interval_s() - time.monotonic()
            if due > 0:
                await asyncio.sleep(max(due, 0.01))
                continue
            try:
                await publish()
            except asyncio.CancelledError:
                raise
            except Exception:  # per-agent failures are retried inside: this is a bug
                self.metrics.errors.labels("publish").inc()
                log.exception("publishing %s failed; the next cycle starts over", what)
