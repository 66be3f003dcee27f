"""The gateway's run recording without a broker: which calls make which runs, when runs end.

A real `RunRecorder` whose broker address nobody listens on keeps every finished run in its
spool; the tests read the records back from there (and parse them as the worker does).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from worker.client import CallCounter
from worker.gateway.observer import CompletedCall, StartedCall
from worker.gateway.recording import SUBMIT_EVERY_S, GatewayRecording
from worker.models import RunRecord, parse_run
from worker.recorder import RunRecorder
from worker.recorder.spool import decode

T0 = 1_790_000_000_000_000_000  # ns since the epoch
MS = 1_000_000
USAGE = {"prompt_tokens": 7, "completion_tokens": 30, "total_tokens": 37}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class Harness:
    """A GatewayRecording on a broker-less recorder, fed calls as the proxy would."""

    def __init__(self, spool_dir: Path, address: str, **options: Any) -> None:
        self.spool_dir = spool_dir
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.counter = CallCounter(clock=self.clock)
        recorder = RunRecorder(
            address,
            spool_dir,
            registry=self.registry,
            close_at_exit=None,
            **options.pop("recorder", {}),
        )
        self.recording = GatewayRecording(
            recorder,
            call_counter=self.counter,
            registry=self.registry,
            close_timeout_s=0.0,
            clock=self.clock,
            **options,
        )
        self._ids = iter(range(1, 1_000_000))
        self._open: dict[int, StartedCall] = {}

    def start(self, run: str | None = "r1", agent: str = "planner", at_ms: int = 0, **kw: Any):
        started = StartedCall(
            call_id=next(self._ids),
            agent_id=agent,
            run_id=run,
            route="chat_completions",
            started_ns=T0 + at_ms * MS,
            **kw,
        )
        self.recording.call_started(started)
        return started

    def complete(self, started: StartedCall, at_ms: int, **kw: Any) -> None:
        fields: dict[str, Any] = {
            "name": "plan",
            "status": 200,
            "usage": USAGE,
            "model": "m1",
            "run_end": started.run_end,
        } | kw
        self.recording.call_completed(
            CompletedCall(
                agent_id=started.agent_id,
                run_id=started.run_id,
                route=started.route,
                started_ns=started.started_ns,
                ended_ns=T0 + at_ms * MS,
                call_id=started.call_id,
                **fields,
            )
        )

    def call(self, start_ms: int, end_ms: int, run: str | None = "r1", **kw: Any) -> None:
        agent = kw.pop("agent", "planner")
        run_end = kw.pop("run_end", False)
        self.complete(self.start(run, agent, start_ms, run_end=run_end), end_ms, **kw)

    def records(self) -> list[RunRecord]:
        """Every run recorded so far, in the order they ended: stops the recording (its
        recorder closes at once, every run on disk) and reads the spool's files."""
        asyncio.run(self.recording.stop())
        return self.spooled()

    def spooled(self) -> list[RunRecord]:
        values = [
            value
            for path in sorted(self.spool_dir.glob("*.seg"))
            for value in decode(path.read_bytes()).values
        ]
        return [parse_run(value) for value in values]

    def recorder_pending(self) -> int:
        return self.recording.recorder.stats().pending_runs

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
def harness(tmp_path: Path, dead_address: str) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        made.append(Harness(tmp_path / f"spool-{len(made)}", dead_address, **options))
        return made[-1]

    yield make
    for h in made:
        if not h.recording.recorder.closed:
            h.recording.recorder.close(timeout=0)


def test_calls_of_a_caller_run_make_one_run_record(harness: Any) -> None:
    h = harness()
    first = h.start(at_ms=0)
    second = h.start(at_ms=5)  # in parallel with the first
    h.complete(second, 40, name="critic", usage={"completion_tokens": 5}, model="m2")
    h.complete(first, 100, name="plan")
    h.call(150, 400, name="write", run_end=True)
    (run,) = h.records()
    assert run.agent_id == "planner"
    assert run.id.version == 7
    assert run.started_at == T0 and run.ended_at == T0 + 400 * MS
    got = [
        (c.kind, c.name, c.started_at, c.ended_at, c.output_tokens, c.prompt_tokens,
         c.total_tokens, c.model_name)
        for c in run.calls
    ]  # fmt: skip
    assert got == [
        ("llm", "plan", T0, T0 + 100 * MS, 30, 7, 37, "m1"),
        ("llm", "critic", T0 + 5 * MS, T0 + 40 * MS, 5, None, None, "m2"),
        ("llm", "write", T0 + 150 * MS, T0 + 400 * MS, 30, 7, 37, "m1"),
    ]
    assert h.sample("agent_hints_gateway_recorded_runs_total", ended_by="run_end_header") == 1
    assert h.sample("agent_hints_gateway_recorded_calls_total") == 3


def test_the_run_end_header_ends_the_run_after_its_calls_in_flight(harness: Any) -> None:
    h = harness()
    slow = h.start(at_ms=0)
    h.call(10, 20, run_end=True)  # the end request is answered while `slow` is in flight
    assert h.recording.open_runs == 0  # the caller's run id is free for a new run
    h.call(30, 40)  # a new run: same caller run id
    h.complete(slow, 50)  # still belongs to the first run
    first, second = sorted(h.records(), key=lambda r: r.started_at)
    assert [c.started_at for c in first.calls] == [T0, T0 + 10 * MS]
    assert first.ended_at == T0 + 50 * MS
    assert [c.started_at for c in second.calls] == [T0 + 30 * MS]
    assert first.id != second.id
    assert second.id.int > first.id.int  # UUIDv7: time-ordered


def test_a_new_run_restarts_the_call_context(harness: Any) -> None:
    h = harness()
    h.counter.next_call("planner", "r1", "plan")
    h.counter.next_call("planner", "r1", "plan")
    h.call(0, 10, run_end=True)  # the recording starts a run: counts from 1 again
    assert h.counter.peek("planner", "r1", "plan") == 0
    h.counter.next_call("planner", "r1", "plan")
    h.call(20, 30)  # another new run (the previous one ended)
    assert h.counter.peek("planner", "r1", "plan") == 0


def test_runs_end_after_idle_s_without_calls(harness: Any) -> None:
    h = harness(idle_s=30)
    h.call(0, 100, run="a")
    h.call(0, 100, run="b")
    h.clock.now += 20
    h.call(200, 300, run="b")  # b is active again
    h.clock.now += 15
    assert h.recording.sweep() == 1  # a: idle 35 s
    assert h.recording.open_runs == 1
    slow = h.start(run="b", at_ms=400)
    h.clock.now += 100
    assert h.recording.sweep() == 0  # b has a call in flight: not idle
    h.complete(slow, 90_000)
    h.clock.now += 31
    assert h.recording.sweep() == 1
    a, b = h.records()
    assert len(a.calls) == 1 and a.ended_at == T0 + 100 * MS
    assert len(b.calls) == 3 and b.ended_at == T0 + 90_000 * MS
    assert h.sample("agent_hints_gateway_recorded_runs_total", ended_by="idle") == 2


def test_a_call_after_idle_s_starts_a_new_run_even_before_the_sweep(harness: Any) -> None:
    h = harness(idle_s=30)
    h.call(0, 100)
    h.clock.now += 31
    h.call(40_000, 40_100)
    h.call(40_200, 40_300, run_end=True)
    first, second = h.records()
    assert len(first.calls) == 1 and len(second.calls) == 2


def test_a_run_reaching_max_calls_ends_and_the_next_call_starts_another(harness: Any) -> None:
    h = harness(max_calls=3)
    for i in range(7):
        h.call(i * 10, i * 10 + 5)
    runs = h.records()
    assert [len(r.calls) for r in runs] == [3, 3, 1]
    assert h.sample("agent_hints_gateway_recorded_runs_total", ended_by="max_calls") == 2
    assert h.sample("agent_hints_gateway_recorded_runs_total", ended_by="shutdown") == 1


def test_more_than_max_runs_open_ends_the_least_recently_active(harness: Any) -> None:
    h = harness(max_runs=2)
    h.call(0, 1, run="a")
    h.call(0, 1, run="b")
    h.clock.now += 1
    h.call(2, 3, run="a")
    h.call(4, 5, run="c")  # b is the least recently active
    assert h.recording.open_runs == 2
    runs = h.records()
    assert [len(r.calls) for r in runs] == [1, 2, 1]  # b, then a and c at shutdown
    assert h.sample("agent_hints_gateway_recorded_runs_total", ended_by="max_runs") == 1


def test_error_responses_are_calls_without_usage(harness: Any) -> None:
    h = harness()
    h.call(0, 10, status=500, usage=None, model=None)
    h.call(20, 30, status=502, usage=None, model=None, name=None)  # no name: its route
    (run,) = h.records()
    assert [(c.name, c.output_tokens, c.model_name) for c in run.calls] == [
        ("plan", None, None),
        ("chat_completions", None, None),
    ]


def test_bad_values_from_the_wire_are_left_out_never_raised(harness: Any) -> None:
    h = harness()
    h.call(0, 10, agent="bad\tagent")  # no run: the worker would refuse the id
    bad_usage = {"completion_tokens": -1, "prompt_tokens": 2.5, "total_tokens": 2**32}
    h.call(0, 10, usage=bad_usage, model="m\x00")
    h.call(20, 30, usage={"completion_tokens": True, "prompt_tokens": "7"})
    h.call(40, 50, name="bad\x07name")  # the call is left out, the run is kept
    h.call(60, 5)  # a wall clock stepped back: ends when it started
    (run,) = h.records()
    assert run.agent_id == "planner"
    assert [(c.output_tokens, c.prompt_tokens, c.total_tokens, c.model_name) for c in run.calls][
        :2
    ] == [(None, None, None, None), (None, None, None, "m1")]
    assert len(run.calls) == 3
    assert run.calls[2].started_at == run.calls[2].ended_at == T0 + 60 * MS
    assert h.sample("agent_hints_gateway_recording_errors_total", reason="invalid_agent_id") == 1
    assert h.sample("agent_hints_gateway_recording_errors_total", reason="invalid_call") == 1


def test_calls_without_a_run_id_are_not_recorded(harness: Any) -> None:
    h = harness()
    h.call(0, 10, run=None)
    assert h.recording.open_runs == 0
    assert h.records() == []


def test_shutdown_records_open_runs_and_leaves_out_calls_in_flight(harness: Any) -> None:
    h = harness()
    h.call(0, 10, run="a")
    h.start(run="a", at_ms=20)  # never completes
    h.start(run="b", at_ms=30)  # a run with only a call in flight
    runs = h.records()
    assert [(len(r.calls), r.ended_at) for r in runs] == [(1, T0 + 10 * MS), (0, T0 + 30 * MS)]
    assert h.sample("agent_hints_gateway_recorded_runs_total", ended_by="shutdown") == 2
    h.call(40, 50, run="c")  # after stop: ignored, never raised
    assert h.recording.open_runs == 0


def test_a_full_spool_is_counted_and_logged_not_raised(harness: Any, caplog: Any) -> None:
    h = harness(recorder={"max_spool_bytes": 600})
    for i in range(5):
        h.call(i * 10, i * 10 + 5, run=f"r{i}", run_end=True)
    assert h.sample("agent_hints_gateway_recording_errors_total", reason="not_recorded") >= 1
    assert h.sample("agent_hints_recorder_runs_failed_total", reason="spool_full") >= 1
    assert "spool full" in caplog.text
    kept = h.records()
    assert 1 <= len(kept) < 5


async def test_on_the_event_loop_runs_ending_together_reach_the_recorder_together(
    harness: Any,
) -> None:
    h = harness()
    for i in range(5):
        h.call(i, i + 1, run=f"r{i}", run_end=True)
    assert h.recorder_pending() == 0  # held for SUBMIT_EVERY_S, so they share a spool write
    await asyncio.sleep(SUBMIT_EVERY_S * 2)
    assert h.recorder_pending() == 5
    h.call(10, 11, run="last", run_end=True)
    await h.recording.stop()  # what is held goes to the recorder at stop
    assert sorted(r.calls[0].started_at for r in h.spooled()) == [
        T0 + ms * MS for ms in (0, 1, 2, 3, 4, 10)
    ]
