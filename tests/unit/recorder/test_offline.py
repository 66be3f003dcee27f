"""The recorder with no broker to talk to: recording still works, runs wait on disk, the
spool limit is an error the caller sees, close() keeps its time limit.

The broker address is a loopback port nobody listens on (a real connection refusal)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from worker.models import parse_run
from worker.recorder import (
    RecorderClosedError,
    RecordTooLargeError,
    RunRecorder,
    SpoolFullError,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def wait_until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def record_runs(recorder: RunRecorder, n: int, agent: str = "planner") -> list[str]:
    ids = []
    for i in range(n):
        with recorder.run(agent) as run:
            with run.llm_call("plan") as call:
                call.set_usage(output_tokens=i, prompt_tokens=1, total_tokens=i + 1)
            run.tool_call("search").end()
        ids.append(str(run.id))
    return ids


def test_runs_recorded_without_a_broker_wait_in_the_spool(tmp_path, dead_address) -> None:
    registry = CollectorRegistry()
    recorder = RunRecorder(dead_address, tmp_path, registry=registry, close_at_exit=None)
    ids = record_runs(recorder, 25)
    wait_until(lambda: recorder.stats().spool_runs == 25)
    assert recorder.stats().pending_runs == 25
    assert "cannot connect to Kafka" in (recorder.stats().last_error or "")
    assert sample(registry, "agent_hints_recorder_runs_recorded_total") == 25
    assert sample(registry, "agent_hints_recorder_spool_runs") == 25
    assert sample(registry, "agent_hints_recorder_spool_bytes") > 0
    assert sample(registry, "agent_hints_recorder_pending_runs") == 25
    assert recorder.flush(timeout=0.3) is False

    started = time.monotonic()
    assert recorder.close(timeout=2.0) is False  # nothing could be sent
    assert time.monotonic() - started < 2.0 + 1.0  # close() keeps (about) its time limit
    assert sample(registry, "agent_hints_recorder_runs_sent_total") == 0
    assert sample(registry, "agent_hints_recorder_runs_spooled_total") == 25

    # the next recorder on the same directory owes the same runs, bytes unchanged
    from worker.recorder.spool import Spool

    spool = Spool(tmp_path)
    segments, damaged = spool.scan()
    assert damaged == 0
    values = [v for s in segments for v in spool.load(s).values]
    spool.close()
    assert [str(parse_run(v).id) for v in values] == ids
    assert {s.keys[0] for s in segments} == {b"planner"}
    again = RunRecorder(dead_address, tmp_path, registry=None, close_at_exit=None)
    try:
        wait_until(lambda: again.stats().pending_runs == 25)
    finally:
        again.close(timeout=0.5)


def test_close_keeps_its_time_limit_while_the_broker_hangs(tmp_path) -> None:
    """A 'broker' that accepts connections and never answers: the producer's start is in
    progress when close() comes (aiokafka turns that cancellation into an error)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        for attempt in range(3):
            spool_dir = tmp_path / str(attempt)
            recorder = RunRecorder(address, spool_dir, registry=None, close_at_exit=None)
            run_ids = record_runs(recorder, 2)
            time.sleep(0.3)  # the connection attempt is under way
            started = time.monotonic()
            assert recorder.close(timeout=1.0) is False
            assert time.monotonic() - started < 1.0 + 2.0
            from worker.recorder.spool import Spool

            spool = Spool(spool_dir)  # released: the sender thread has finished
            segments, _ = spool.scan()
            assert [str(parse_run(v).id) for s in segments for v in spool.load(s).values] == run_ids
            spool.close()


def test_close_right_after_start_keeps_its_time_limit(tmp_path, dead_address) -> None:
    """close() at every point of the first connection attempt (it used to hang when the
    cancellation reached aiokafka while the producer was being stopped)."""
    for attempt in range(40):
        recorder = RunRecorder(dead_address, tmp_path / str(attempt), registry=None,
                               close_at_exit=None)  # fmt: skip
        time.sleep((attempt % 20) / 1000)
        started = time.monotonic()
        recorder.close(timeout=0.1)
        assert time.monotonic() - started < 2.0, f"close() hung (attempt {attempt})"


def test_a_full_spool_is_an_error_the_caller_sees(tmp_path, dead_address, caplog) -> None:
    registry = CollectorRegistry()
    recorder = RunRecorder(
        dead_address, tmp_path, registry=registry, max_spool_bytes=2000, close_at_exit=None
    )
    try:
        accepted = 0
        with pytest.raises(SpoolFullError) as caught:
            for _ in range(100):
                record_runs(recorder, 1)
                accepted += 1
        assert 0 < accepted < 100
        error = caught.value
        assert "spool full" in str(error) and "max_spool_bytes=2000" in str(error)
        assert parse_run(error.record).id == error.run_id  # the caller can keep it elsewhere
        assert sample(registry, "agent_hints_recorder_runs_failed_total", reason="spool_full") == 1
        assert sample(registry, "agent_hints_recorder_runs_recorded_total") == accepted
        assert sample(registry, "agent_hints_recorder_spool_limit_bytes") == 2000

        # inside a failing `with` the agent's own exception wins; the loss is logged
        with caplog.at_level(logging.ERROR), pytest.raises(KeyError), recorder.run("x"):
            raise KeyError("agent failure")
        assert "could not be recorded" in caplog.text and "SpoolFullError" in caplog.text
        assert sample(registry, "agent_hints_recorder_runs_failed_total", reason="spool_full") == 2
    finally:
        recorder.close(timeout=0.5)


def test_too_large_and_closed_are_errors_too(tmp_path, dead_address) -> None:
    registry = CollectorRegistry()
    recorder = RunRecorder(
        dead_address, tmp_path, registry=registry, max_record_bytes=300, close_at_exit=None
    )
    run = recorder.run("big")
    run.llm_call("x" * 400).end()
    with pytest.raises(RecordTooLargeError, match="max_record_bytes=300"):
        run.end()
    assert sample(registry, "agent_hints_recorder_runs_failed_total", reason="too_large") == 1
    recorder.close(timeout=0.5)
    with pytest.raises(RecorderClosedError):
        recorder.run("late").end()
    assert recorder.close(timeout=0.1) is True  # idempotent; nothing was owed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topic": "bad topic"}, "not a valid Kafka topic name"),
        ({"max_spool_bytes": 0}, "max_spool_bytes must be a positive integer"),
        ({"max_record_bytes": "1"}, "max_record_bytes must be a positive integer"),
        ({"producer_options": {"acks": 1}}, "may not set acks"),
        ({"bootstrap_servers": " , "}, "no broker address"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path, dead_address, kwargs, message) -> None:
    arguments = {"bootstrap_servers": dead_address, "spool_dir": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=message):
        RunRecorder(**arguments, registry=None, close_at_exit=None)
    RunRecorder(dead_address, tmp_path, registry=None, close_at_exit=None).close(0.1)  # not locked


def test_two_recorders_share_one_registry(tmp_path, dead_address) -> None:
    registry = CollectorRegistry()
    first = RunRecorder(dead_address, tmp_path / "a", registry=registry, close_at_exit=None)
    second = RunRecorder(dead_address, tmp_path / "b", registry=registry, close_at_exit=None)
    try:
        record_runs(first, 2)
        record_runs(second, 3)
        assert sample(registry, "agent_hints_recorder_runs_recorded_total") == 5
        wait_until(lambda: sample(registry, "agent_hints_recorder_spool_runs") == 5)
    finally:
        first.close(timeout=0.5)
        second.close(timeout=0.5)


def test_recording_from_asyncio_code(tmp_path, dead_address) -> None:
    import asyncio

    async def agent() -> str:
        recorder = RunRecorder(dead_address, tmp_path, registry=None, close_at_exit=None)
        async with recorder.run("async") as run, run.llm_call("chat") as call:
            call.set_usage(output_tokens=3)
        assert await recorder.aflush(timeout=0.2) is False
        assert await recorder.aclose(timeout=0.5) is False
        return str(run.id)

    run_id = asyncio.run(agent())
    from worker.recorder.spool import Spool

    spool = Spool(tmp_path)
    (segment,), _ = spool.scan()
    assert orjson.loads(spool.load(segment).values[0])["id"] == run_id


def test_a_forked_child_cannot_use_its_parents_recorder(tmp_path, dead_address) -> None:
    recorder = RunRecorder(dead_address, tmp_path, registry=None, close_at_exit=None)
    try:
        pid = os.fork()
        if pid == 0:  # the child: recording must fail loudly, not vanish into a dead thread
            code = 1
            try:
                recorder.run("child").end()
            except RecorderClosedError as exc:
                code = 0 if "before a fork" in str(exc) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        record_runs(recorder, 1)  # the parent's recorder is unaffected
        wait_until(lambda: recorder.stats().spool_runs == 1)
    finally:
        recorder.close(timeout=0.2)


def test_importing_the_recorder_pulls_in_neither_faust_nor_rocksdb() -> None:
    code = (
        "import sys, worker.recorder\n"
        "heavy = {'faust', 'rocksdict', 'mode', 'nemo_relay', 'opentelemetry'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
