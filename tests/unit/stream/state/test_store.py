"""The state store and the table layout: exactly once through crashes at any write, deltas
proportional to what changed, memory bounded in bytes (no Kafka: `changelog_sim`)."""

from __future__ import annotations

import gc
import random
import tracemalloc
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.stream.state.changelog_sim import Changelog, Crash, LocalStore, Receipt, SimTable
from worker.demo_workload import generate_runs
from worker.learner import AgentState, LearnerConfig, state_hints, trie_dict
from worker.learner.limits import Limits
from worker.learner.state import StateFormatError
from worker.models import parse_run
from worker.stream.processor import Outcome, Processor
from worker.stream.publish_queue import PublishQueue
from worker.stream.rekey import partition_for
from worker.stream.state import agent_records, cache, records
from worker.stream.state.records import agent_key, encode_snapshot
from worker.stream.state.store import StateStore

CONFIG = LearnerConfig()
ADAPTIVE = LearnerConfig(semantics="adaptive")
PARTITIONS = 2
START = 1_700_000_000_000_000_000


def make_store(table: Any, **options: Any) -> StateStore:
    options.setdefault("max_bytes", 1 << 30)
    options.setdefault("config", CONFIG)
    return StateStore(table, **options)


def make_processor(store: StateStore, partitions: int = PARTITIONS) -> Processor:
    return Processor(store, PublishQueue(store.cache), CONFIG, Limits(), partitions)


def stored_state(store: StateStore, agent_id: str, partition: int) -> AgentState:
    return store.state(store.get(agent_id, partition))


def make_input(seed: int, runs: int, agents: int, drift: bool = False) -> dict[int, list[bytes]]:
    """Per partition, the records in offset order: runs of the agents homed there, about one
    in eight sent a second time a few records later (a producer retry). With `drift`, the
    second half of the runs write five times the tokens (the adaptive rule set forgets)."""
    rng = random.Random(seed)
    records: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    generated = generate_runs(runs, agents, seed=seed, llm_calls=(1, 5), start_ns=START)
    for number, run in enumerate(generated):
        if drift:  # a model per call name, another one (and more tokens) half-way through
            later = number >= runs // 2
            for call in run["calls"]:
                if call["kind"] == "llm":
                    call["model_name"] = ("new-" if later else "old-") + call["name"]
                if later and call.get("output_tokens"):
                    call["output_tokens"] *= 5
        value = orjson.dumps(run)
        home = records[partition_for(run["agent_id"], PARTITIONS)]
        home.append(value)
        if rng.random() < 0.125:
            home.insert(len(home) - rng.randint(0, min(5, len(home) - 1)), value)
    return records


def expected_states(inputs: dict[int, list[bytes]]) -> dict[str, bytes]:
    """Each distinct run learned once, per agent, as canonical bytes."""
    states: dict[str, AgentState] = {}
    seen: set[str] = set()
    for values in inputs.values():
        for value in values:
            run = parse_run(value)
            if str(run.id) not in seen:
                seen.add(str(run.id))
                states.setdefault(run.agent_id, AgentState()).learn(run, CONFIG)
    return {agent: state.to_bytes() for agent, state in states.items()}


class SimWorker:
    """A worker over a local store: processes from the committed offsets and commits every
    `commit_every` records, as the worker does: faust takes the offsets, then the states are
    written one partition at a time, `interleave` records of each partition processed
    between two partitions' writes; the offsets are committed once the broker acknowledged
    those writes, which here happens at the next commit (records keep being processed
    meanwhile). `Crash` ends it at the table write `crash_after` allows."""

    def __init__(
        self, store: LocalStore, changelog: Changelog, crash_after: int | None, **cache: Any
    ) -> None:
        self.table = SimTable(store, changelog, crash_after)
        self.store = make_store(self.table, **cache)
        self.processor = make_processor(self.store)
        self.outcomes: list[Outcome] = []
        self._in_flight: tuple[int, dict[int, int]] | None = None  # (records sent, offsets)
        self._inputs: dict[int, list[bytes]] = {}
        self._position: dict[int, int] = {}

    def run(
        self,
        inputs: dict[int, list[bytes]],
        committed: dict[int, int],
        commit_every: int,
        interleave: int = 0,
    ) -> dict[int, int]:
        """Process to the end of the input; returns the committed offsets (raises Crash)."""
        self._inputs, self._position = inputs, dict(committed)
        done = 0
        while self._step():
            done += 1
            if done % commit_every == 0:
                self.commit(committed, interleave)
        self.commit(committed, interleave)
        self.commit(committed, interleave)  # the last one's acknowledgement
        return committed

    def _step(self) -> bool:
        """The next record of each partition not at its end; False when all are."""
        stepped = False
        for p, values in self._inputs.items():
            if self._position[p] < len(values):
                result = self.processor.process(values[self._position[p]], p, event=object())
                self.outcomes.append(result.outcome)
                self._position[p] += 1
                stepped = True
        return stepped

    def commit(self, committed: dict[int, int], interleave: int) -> None:
        if self._in_flight is not None:  # the previous commit completes
            sent, offsets = self._in_flight
            self.table.acknowledge(sent)
            self.store.acknowledged()
            committed.update(offsets)
        offsets = dict(self._position)  # faust chooses the offsets, then the states go
        for partition in self.store.partitions_to_write():
            self.store.write([partition])
            for _ in range(interleave):
                self._step()
        self.store.committed()
        self._in_flight = (len(self.table.changelog.records), offsets)
        self.processor.to_publish.take()  # the publisher's turn: those agents may now leave


def final_states(changelog: Changelog, agents: list[str]) -> dict[str, bytes]:
    """What a worker with a lost disk reads back: every agent's state, as canonical bytes."""
    store = make_store(SimTable(LocalStore.rebuilt(changelog), changelog, None))
    return {
        agent: stored_state(store, agent, partition_for(agent, PARTITIONS)).to_bytes()
        for agent in agents
    }


Generation = tuple[str, bool, int | None, int, int, int]


def crash_and_restart(
    seed: int,
    generations: list[Generation],
    small: bool,
    interleave: int = 0,
    config: LearnerConfig = CONFIG,
) -> None:
    """Workers killed at table writes (also mid-commit: part of what they sent reaches the
    changelog and part of that their disk), restarted with their disk, without it, or
    another worker with a stale disk taking over; then one runs to the end. Every agent's
    stored state must equal its distinct runs learned once, bit for bit."""
    patch = pytest.MonkeyPatch()
    patch.setitem(globals(), "CONFIG", config)
    if small:  # snapshots, parts, chunk sealing and forgetting, eviction: all of them, often
        patch.setattr(agent_records, "MIN_DELTA_BYTES", 600)
        patch.setattr(agent_records, "MAX_DELTAS", 3)
        patch.setattr(records, "INLINE_BYTES", 1500)
        patch.setattr(records, "PART_BYTES", 700)
    inputs = make_input(seed, runs=160, agents=5, drift=config is ADAPTIVE)
    options = {"window": 300, "max_bytes": 40_000, "max_decoded": 2} if small else {}
    changelog = Changelog()
    disks: dict[str, LocalStore] = {}
    committed = {p: 0 for p in range(PARTITIONS)}
    try:
        for name, lost, crash_after, reached, applied, commit_every in [
            *generations,
            ("A", False, None, 0, 0, 3),
        ]:
            disk = disks.get(name)
            if disk is None or lost:
                disk = disks[name] = LocalStore.rebuilt(changelog)
            else:
                disk.recover(changelog)
            worker = SimWorker(disk, changelog, crash_after, **options)
            try:
                worker.run(inputs, committed, commit_every, interleave)
            except Crash:
                worker.table.crashed(reached, applied)
        want = expected_states(inputs)
        got = final_states(changelog, sorted(want))
        assert {a: AgentState.from_bytes(b).runs for a, b in got.items()} == {
            a: AgentState.from_bytes(b).runs for a, b in want.items()
        }
        assert got == want
    finally:
        patch.undo()


generation = st.tuples(
    st.sampled_from(["A", "B"]),  # which worker (each keeps its own disk)
    st.booleans(),  # its disk lost before it starts
    st.integers(0, 400),  # table writes before it is killed
    st.integers(0, 30),  # of its unacknowledged records, how many reached the broker
    st.integers(0, 30),  # ... and of those, how many reached its local store
    st.integers(1, 9),  # records between commits
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# found by searching, each fails when one rule of the design is broken: a snapshot that does
# not carry the ids of stored deltas it folds (82, 339); an agent holding such ids dropped
# from memory before the next write (82); the local store written before the changelog (12)
@example(
    seed=82,
    generations=[
        ("B", False, 91, 25, 5, 6),
        ("B", True, 17, 13, 15, 8),
        ("A", True, 286, 26, 4, 2),
        ("A", False, 321, 10, 25, 8),
    ],
    small=True,
    interleave=0,
)
@example(
    seed=339,
    generations=[
        ("A", False, 256, 20, 23, 2),
        ("B", False, 26, 16, 27, 8),
        ("A", False, 196, 0, 4, 2),
        ("B", True, 252, 25, 11, 9),
        ("A", True, 214, 3, 20, 5),
        ("A", False, 361, 5, 18, 6),
    ],
    small=True,
    interleave=0,
)
@example(
    seed=12,
    generations=[
        ("B", True, 5, 11, 15, 5),
        ("B", False, 307, 7, 17, 1),
        ("A", False, 188, 5, 10, 4),
        ("A", False, 102, 2, 16, 6),
        ("B", False, 44, 0, 29, 1),
        ("A", True, 216, 30, 14, 2),
    ],
    small=True,
    interleave=0,
)
@given(
    seed=st.integers(0, 2**16),
    generations=st.lists(generation, min_size=1, max_size=6),
    small=st.booleans(),
    interleave=st.integers(0, 3),  # records processed between two partitions' writes
)
def test_every_run_counts_once_through_crashes_at_any_write(
    seed: int, generations: list[Generation], small: bool, interleave: int
) -> None:
    crash_and_restart(seed, generations, small, interleave)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    generations=st.lists(generation, min_size=1, max_size=6),
    small=st.booleans(),
    interleave=st.integers(0, 3),
)
def test_every_run_counts_once_through_crashes_under_the_adaptive_rules(
    seed: int, generations: list[Generation], small: bool, interleave: int
) -> None:
    """The same under the adaptive rule set, whose deltas are folded run by run (shifts,
    hysteresis, models): a state rebuilt from any stored prefix equals learning the runs."""
    crash_and_restart(seed, generations, small, interleave, ADAPTIVE)


def test_the_drifting_input_makes_adaptive_agents_forget() -> None:
    """The input above exercises decay: some agent forgets runs (its root holds fewer
    calls than it learned) and its deltas carry models."""
    inputs = make_input(seed=5, runs=160, agents=5, drift=True)
    states: dict[str, AgentState] = {}
    calls: dict[str, int] = {}
    seen: set[bytes] = set()
    for values in inputs.values():
        for value in values:
            if value in seen:
                continue
            seen.add(value)
            run = parse_run(value)
            learned = states.setdefault(run.agent_id, AgentState()).learn(run, ADAPTIVE)
            calls[run.agent_id] = calls.get(run.agent_id, 0) + len(learned.observations)
            assert learned.models is not None and len(learned.models) == len(learned.observations)
    forgot = [a for a, s in states.items() if s.root.any_index.remaining_calls.count < calls[a]]
    assert forgot
    extras = states[forgot[0]].adaptive
    assert extras is not None and any(extras.models.values())


def test_a_commit_cut_short_is_read_back_whole_or_not_at_all() -> None:
    """A worker dies while its commit's records are in flight: the broker got some, its disk
    none. Restarted on the same disk, it reads those back (faust's recovery) and skips their
    runs as duplicates, and learns the runs whose records were lost."""
    inputs = make_input(seed=3, runs=60, agents=3)
    changelog = Changelog()
    disk = LocalStore()
    start = {p: 0 for p in inputs}
    SimWorker(disk, changelog, None).run({p: v[:10] for p, v in inputs.items()}, start, 100)
    committed = {p: min(10, len(v)) for p, v in inputs.items()}
    crashing = SimWorker(disk, changelog, crash_after=None)
    for p, values in inputs.items():
        for value in values[committed[p] :]:
            crashing.processor.process(value, p, event=None)
    written = crashing.store.write_all()  # the commit whose records are in flight
    assert written > 3
    crashing.table.crashed(reached=written // 2, applied=0)
    disk.recover(changelog)
    again = SimWorker(disk, changelog, crash_after=None)
    again.run(inputs, committed, commit_every=5)
    assert Outcome.DUPLICATE in again.outcomes and Outcome.LEARNED in again.outcomes
    want = expected_states(inputs)
    assert final_states(changelog, sorted(want)) == want


def test_a_busy_agent_writes_what_changed_not_its_whole_state() -> None:
    """Issue 10 problem 8: a busy agent's whole value was rewritten at every commit (17x the
    input bytes at 10 runs/s). Now a commit writes the runs it learned (and now and then a
    snapshot): at most twice the input bytes at 10 runs per commit, and near that at 1."""
    runs = [orjson.dumps(r) for r in generate_runs(3_400, 1, seed=9, start_ns=START)]
    table = SimTable(LocalStore(), Changelog(), None)
    store = make_store(table)
    processor = make_processor(store, 1)
    for value in runs[:3_000]:
        processor.process(value, 0, event=object())
    store.write_all()
    for per_commit, batch in ((10, runs[3_000:3_300]), (1, runs[3_300:3_400])):
        before = len(table.changelog.records)
        for i, value in enumerate(batch):
            assert processor.process(value, 0, event=object()).outcome is Outcome.LEARNED
            if i % per_commit == per_commit - 1:
                store.write_all()
        written = sum(len(k) + len(v or b"") for k, v in table.changelog.records[before:])
        ratio = written / sum(map(len, batch))
        assert ratio <= 2.0 if per_commit == 10 else ratio <= 3.0, (per_commit, ratio)


def test_a_duplicate_12000_runs_later_is_still_skipped() -> None:
    """Issue 10 problem 8: ids were kept per agent, 10,000 of them, so a duplicate arriving
    more than 10,000 runs of that agent later counted again. SPEC 1: 100,000 per partition."""
    store = make_store(SimTable(LocalStore(), Changelog(), None))
    processor = make_processor(store, 1)
    template = next(iter(generate_runs(1, 1, seed=1, llm_calls=(1, 1), start_ns=START)))
    values = [orjson.dumps({**template, "id": str(uuid.uuid4())}) for _ in range(12_001)]
    for i, value in enumerate(values):
        assert processor.process(value, 0, event=object()).outcome is Outcome.LEARNED
        if i % 1000 == 0:
            store.write_all()
    assert processor.process(values[0], 0, event=object()).outcome is Outcome.DUPLICATE
    store.write_all()
    changelog = store.table.changelog  # type: ignore[attr-defined]
    restored = make_store(SimTable(LocalStore.rebuilt(changelog), Changelog(), None))
    restored_processor = make_processor(restored, 1)
    assert restored_processor.process(values[0], 0, event=object()).outcome is Outcome.DUPLICATE


def test_memory_per_cached_agent_with_three_runs_is_small() -> None:
    """Issue 10 problem 2: 46 KB per cached agent at 3 runs (decoded states, with the metric
    caches publishing leaves in them). Target: at most 8 KB. Measured with tracemalloc over
    1,000 agents learned, written and published, 32 of them kept decoded."""
    runs = [orjson.dumps(r) for r in generate_runs(3_000, 1_000, seed=5, start_ns=START)]
    store = make_store(_DiscardingTable(), max_decoded=32)
    processor = make_processor(store, 1)
    processor.process(runs[0], 0, event=object())  # module-level memos and caches first
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, value in enumerate(runs[1:]):
            processor.process(value, 0, event=object())
            if i % 300 == 299:
                store.write_all()
                for change in processor.to_publish.take():  # what the publisher reads
                    state_hints(store.state(change.entry), CONFIG)
                    trie_dict(change.agent_id, store.state(change.entry), CONFIG)
        store.write_all()
        processor.to_publish.take()
        store.acknowledged()
        store.cache.fit()
        gc.collect()
        per_agent = (tracemalloc.get_traced_memory()[0] - before) / len(store)
    finally:
        tracemalloc.stop()
    assert len(store) > 900
    assert per_agent <= 8_000, per_agent
    assert store.state_bytes / len(store) <= 8_000  # and the estimate is of the same order


class _DiscardingTable:
    """A table that stores nothing (writes are RocksDB's and the broker's memory); every
    write counts as applied at once."""

    def get(self, key: bytes) -> bytes | None:
        return None

    def put(self, partition: int, key: bytes, value: bytes | None) -> Receipt:
        return Receipt(applied=True)


def test_memory_stays_within_the_bound_in_bytes() -> None:
    table = SimTable(LocalStore(), Changelog(), None)
    store = make_store(table, max_bytes=5_000_000)
    processor = make_processor(store, 1)
    runs = [orjson.dumps(r) for r in generate_runs(4_000, 2_000, seed=6, start_ns=START)]
    for i, value in enumerate(runs):
        processor.process(value, 0, event=object())
        if i % 50 == 49:  # a commit, the acknowledgements, a publish cycle
            store.write_all()
            table.acknowledge()
            store.acknowledged()
            processor.to_publish.take()
            store.cache.fit()
            assert store.state_bytes <= 5_000_000
    assert store.decoded_count < 100  # the rest are kept serialized ...
    assert 500 < len(store) < 1_900  # ... and the least recently used dropped
    assert store.cache.serialized_by["bytes"] > 0
    assert store.cache.serialized_by["idle"] == 0
    agent, state = _any_dropped_agent(store, runs)
    reads = store.decodes["table"]
    assert stored_state(store, agent, 0).to_bytes() == state.to_bytes()  # read from the table
    assert store.decodes["table"] == reads + 1  # and counted


def _any_dropped_agent(store: StateStore, runs: list[bytes]) -> tuple[str, AgentState]:
    states: dict[str, AgentState] = {}
    for value in runs:
        run = parse_run(value)
        states.setdefault(run.agent_id, AgentState()).learn(run, CONFIG)
    dropped = next(a for a in states if a not in store.cache)
    return dropped, states[dropped]


def test_an_agent_lets_go_of_its_last_write_once_the_local_store_has_it() -> None:
    """The send of an agent's last record (in the worker a Kafka future holding the record's
    key and value) is kept only until the write is applied: a cached agent does not keep a
    second copy of its state for good."""
    table = SimTable(LocalStore(), Changelog(), None)
    store = make_store(table)
    processor = make_processor(store, 1)
    runs = [orjson.dumps(r) for r in generate_runs(60, 20, seed=7, start_ns=START)]
    for value in runs[:40]:
        processor.process(value, 0, event=object())
    store.write_all()
    processor.to_publish.take()
    entries = [store.cache.get(agent) for agent in {parse_run(v).agent_id for v in runs[:40]}]
    assert all(e is not None and e.last_write is not None for e in entries)  # not applied yet
    table.acknowledge()
    store.acknowledged()
    assert all(e is not None and e.last_write is None for e in entries)
    for value in runs[40:]:  # and writes go on as before
        processor.process(value, 0, event=object())
    store.write_all()
    table.acknowledge()
    store.acknowledged()
    restored = make_store(SimTable(LocalStore.rebuilt(table.changelog), Changelog(), None))
    for agent, state in expected_states({0: runs}).items():
        assert stored_state(restored, agent, 0).to_bytes() == state


def test_agents_released_by_the_acknowledgements_are_kept_within_max_decoded() -> None:
    table = SimTable(LocalStore(), Changelog(), None)
    store = make_store(table, max_decoded=8)
    processor = make_processor(store, 1)
    for run in generate_runs(100, 50, seed=8, start_ns=START):
        processor.process(orjson.dumps(run), 0, event=object())
    store.write_all()
    processor.to_publish.take()
    assert store.decoded_count >= 40  # held until the changelog has their writes
    table.acknowledge()
    store.acknowledged()
    assert store.decoded_count == 8
    assert len(store) >= 40  # kept serialized, not dropped
    assert store.cache.serialized_by == {"bytes": 0, "count": len(store) - 8, "idle": 0}


def test_agents_unused_for_cool_after_commits_are_serialized_as_idle() -> None:
    table = SimTable(LocalStore(), Changelog(), None)
    store = make_store(table)
    processor = make_processor(store, 1)
    for run in generate_runs(60, 20, seed=8, start_ns=START):
        processor.process(orjson.dumps(run), 0, event=object())
    store.write_all()
    processor.to_publish.take()
    table.acknowledge()
    store.acknowledged()
    decoded = store.decoded_count
    assert decoded == len(store) > 10
    for _ in range(cache.COOL_AFTER):
        store.committed()
    assert store.cache.serialized_by == {"bytes": 0, "count": 0, "idle": decoded}
    assert store.decoded_count == 0 and len(store) == decoded  # kept, serialized


def test_decoded_agents_give_way_once_the_estimate_passes_its_share_of_the_bound() -> None:
    table = SimTable(LocalStore(), Changelog(), None)
    store = make_store(table, max_bytes=4_000_000, max_decoded=1_000)
    processor = make_processor(store, 1)
    values = [orjson.dumps(r) for r in generate_runs(400, 200, seed=9, start_ns=START)]
    for value in values:
        processor.process(value, 0, event=object())
    store.write_all()
    processor.to_publish.take()
    table.acknowledge()
    store.acknowledged()
    expected = expected_states({0: values})
    assert len(store) == len(expected) > 150  # none dropped: serialized, they take little
    assert 0 < store.decoded_count < len(expected) / 2
    assert store.state_bytes <= 4_000_000 * cache.DECODED_SHARE
    serialized = len(expected) - store.decoded_count
    assert store.cache.serialized_by == {"bytes": serialized, "count": 0, "idle": 0}
    decodes = store.decodes["cache"]
    for agent, state in expected.items():  # decoded again as they were
        assert stored_state(store, agent, 0).to_bytes() == state
    assert store.decodes["cache"] >= decodes + serialized  # each counted (some twice)
    assert store.decodes["table"] == 0


def test_format_1_values_are_read_and_their_run_ids_kept() -> None:
    run = parse_run(orjson.dumps(next(iter(generate_runs(1, 1, seed=2, start_ns=START)))))
    state = AgentState()
    state.learn(run, CONFIG)
    body = state.to_bytes()[5:]
    legacy = b"\x01" + len(body).to_bytes(4, "little") + body + run.id.bytes
    store = LocalStore({agent_key(run.agent_id): legacy})
    states = make_store(SimTable(store, Changelog(), None))
    assert stored_state(states, run.agent_id, 0).runs == 1
    assert run.id.int in states.run_ids(0)


def test_agent_keys_never_collide_with_internal_keys() -> None:
    keys = {
        agent_key("\x00d"),
        agent_key("\x00dx"),
        agent_key("a"),
        records.delta_key("a", 1),
        records.delta_key("a\x00", 1),
        records.part_key("a", 1, 1, 0),
        records.open_ids_key(0),
        records.chunk_key(0, 0),
    }
    assert len(keys) == 8
    assert not any(key.startswith(b"\x00") for key in (agent_key("a"), agent_key("b")))


def test_large_snapshots_are_stored_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "INLINE_BYTES", 4000)
    monkeypatch.setattr(records, "PART_BYTES", 1000)
    head, parts = encode_snapshot(7, 3, b"", b"x" * 3500)
    assert parts == []
    head, parts = encode_snapshot(7, 3, b"i" * 32, b"x" * 4500)
    assert len(parts) == 5 and all(len(p) <= 1002 for p in parts)
    assert records.decode_snapshot_head(head).parts == 5
    assert records.decode_snapshot_head(head).run_ids == b"i" * 32


@pytest.mark.parametrize(
    "value",
    [b"", b"\x02D", b"\x02Dxxxxxxxxxxxxxxxxxxxxxxxx[", b"\x02S", b"\x02Q" + b"0" * 30],
)
def test_unreadable_records_are_a_clear_error(value: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a|unreadable"):
        if value[:2] == b"\x02D":
            records.decode_delta(value)
        else:
            records.decode_snapshot_head(value)


def test_a_backlog_of_new_agents_costs_linear_bookkeeping() -> None:
    """Thousands of new agents learned between two commits are all held (unwritten,
    unpublished). Each read of a new agent used to walk every held one looking for one to
    serialize: quadratic (a 50,000-agent backlog ran at ~130 runs/s). Held agents are now
    outside the orders that making room walks: count the agents it looks at."""
    store = make_store(_DiscardingTable(), max_decoded=16)
    processor = make_processor(store, 1)
    runs = [orjson.dumps(r) for r in generate_runs(3_000, 3_000, seed=9, start_ns=START)]
    for value in runs:
        processor.process(value, 0, event=object())
    assert store.decoded_count == len(store) > 1_500  # all held: kept decoded
    serialized = sum(store.cache.serialized_by.values())
    assert serialized < 10 * len(runs), serialized  # quadratic would be ~4,500,000
    store.write_all()
    processor.to_publish.take()
    store.acknowledged()
    store.cache.fit()  # released now: back within the bound
    assert store.decoded_count <= 16


def test_deltas_carry_the_recent_accuracy_pairs_and_old_ones_read_without() -> None:
    run = parse_run(orjson.dumps(next(iter(generate_runs(1, 1, seed=4, start_ns=START)))))
    observations = AgentState().learn(run, CONFIG).observations
    pairs = [(True, 12.5), (False, 300.0)]
    delta = records.decode_delta(records.encode_delta(7, 2, 1, b"i" * 16, observations, pairs))
    assert (delta.owner, delta.seq, delta.runs, delta.run_ids) == (7, 2, 1, b"i" * 16)
    assert delta.observations == observations and delta.recent == pairs
    # a delta written before scoring existed: five observation columns, no pairs
    new = records.encode_delta(7, 2, 1, b"", observations, [])
    head, body = new[: new.index(b"[")], orjson.loads(new[new.index(b"[") :])
    old = records.decode_delta(head + orjson.dumps(body[:7]))
    assert old.observations == observations and old.recent is None


def test_deltas_carry_the_calls_models_and_older_ones_read_without() -> None:
    run = parse_run(orjson.dumps(next(iter(generate_runs(1, 1, seed=4, start_ns=START)))))
    learned = AgentState().learn(run, ADAPTIVE)
    observations = learned.observations
    models = ["gpt-4o", None, *["llama"] * (len(observations) - 2)]
    value = records.encode_delta(7, 2, 1, b"", observations, [], models)
    delta = records.decode_delta(value)
    assert delta.observations == observations and delta.models == models
    assert delta.recent == []
    head, body = value[: value.index(b"[")], orjson.loads(value[value.index(b"[") :])
    assert body[9] == ["gpt-4o", "llama"]  # each model once, then a reference per call
    older = records.decode_delta(head + orjson.dumps(body[:9]))
    assert older.observations == observations and older.models is None
    with pytest.raises(StateFormatError):  # a reference per observation, or it is not a delta
        records.decode_delta(head + orjson.dumps([*body[:10], body[10][:-1]]))
