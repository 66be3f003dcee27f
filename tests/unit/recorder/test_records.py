"""Run records as the recorder writes them: SPEC 9 exactly, checked with the worker's parser."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from uuid import UUID

import orjson
import pytest

from worker.models import UINT32_MAX, parse_run
from worker.models.timestamps import parse_timestamp_ns
from worker.recorder import Run, RunEndedError

NINE_DIGITS_Z = r"\.\d{9}Z$"


class Captured:
    """A sink that keeps the records runs hand over (the recorder's side is tested elsewhere)."""

    def __init__(self, record_payloads: bool = False) -> None:
        self.record_payloads = record_payloads
        self.records: list[bytes] = []

    def submit(self, run: Run, record: bytes) -> None:
        self.records.append(record)

    def run(self, agent_id: str, **kwargs: object) -> Run:
        return Run(self, agent_id, **kwargs)  # type: ignore[arg-type]

    def only(self) -> dict:
        assert len(self.records) == 1
        return orjson.loads(self.records[0])


def test_the_issues_example_makes_a_spec_record() -> None:
    sink = Captured()
    with sink.run("planner") as run:
        with run.llm_call("planner", model_name="m") as call:
            call.set_usage(output_tokens=120, prompt_tokens=30, total_tokens=150)
        with run.tool_call("search"):
            pass
    record = sink.only()
    parsed = parse_run(sink.records[0])
    assert parsed.id == run.id and run.id.version == 7
    assert list(record) == ["id", "agent_id", "calls", "started_at", "ended_at"]
    assert record["calls"] == [
        {
            "kind": "llm",
            "name": "planner",
            "started_at": record["calls"][0]["started_at"],
            "ended_at": record["calls"][0]["ended_at"],
            "output_tokens": 120,
            "prompt_tokens": 30,
            "total_tokens": 150,
            "model_name": "m",
        },
        {
            "kind": "tool",
            "name": "search",
            "started_at": record["calls"][1]["started_at"],
            "ended_at": record["calls"][1]["ended_at"],
        },
    ]
    stamps = [record["started_at"], record["ended_at"]] + [
        c[k] for c in record["calls"] for k in ("started_at", "ended_at")
    ]
    for stamp in stamps:
        assert stamp.endswith("Z") and len(stamp.rsplit(".", 1)[1]) == 10, stamp
    ns = [parse_timestamp_ns(s) for s in stamps]
    # run start <= call 1 start <= call 1 end <= call 2 start <= call 2 end <= run end
    assert ns[0] <= ns[2] <= ns[3] <= ns[4] <= ns[5] <= ns[1]
    assert parsed.started_at == run.started_at and parsed.ended_at == run.ended_at


def test_absent_optional_fields_are_left_out_and_run_id_is_fixed_at_start() -> None:
    sink = Captured()
    run = sink.run("a")
    run_id = run.id
    run.tool_call("t").end()
    run.end()
    record = sink.only()
    assert record["id"] == str(run_id)
    assert set(record["calls"][0]) == {"kind", "name", "started_at", "ended_at"}
    assert record["agent_id"] == "a"


def test_calls_are_recorded_in_start_order_whatever_order_they_were_added() -> None:
    sink = Captured()
    base = 1_800_000_000_000_000_000
    run = sink.run("gateway", started_at=base)
    run.add_call("llm", "third", started_at=base + 300, ended_at=base + 400)
    run.add_call("llm", "first", started_at=base + 100, ended_at=base + 900)
    run.add_call("tool", "second", started_at=base + 200)  # never ended: no ended_at
    run.add_call("llm", "first-tie", started_at=base + 100, ended_at=base + 150)
    run.end(ended_at=base + 1000)
    record = sink.only()
    assert [c["name"] for c in record["calls"]] == ["first", "first-tie", "second", "third"]
    assert "ended_at" not in record["calls"][2]
    parsed = parse_run(sink.records[0])
    assert [c.started_at - base for c in parsed.calls] == [100, 100, 200, 300]
    assert parsed.started_at == base and parsed.ended_at == base + 1000


def test_explicit_times_as_datetimes_and_every_field_of_add_call() -> None:
    sink = Captured(record_payloads=True)
    start = datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    run = sink.run("gw", started_at=start, run_id="01890a5d-ac96-774b-bcce-b302099a8057")
    run.add_call(
        "llm",
        "chat",
        started_at=start,
        ended_at=datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC),
        output_tokens=7,
        prompt_tokens=UINT32_MAX,
        total_tokens=0,
        model_name="llama",
        tool_call_count=2,
        metadata={"team": "x"},
        annotated_request={"messages": [{"role": "user", "content": "hi"}]},
        annotated_response={"message": "hello"},
    )
    run.end(ended_at=datetime(2026, 5, 1, 12, 0, 2, tzinfo=UTC))
    call = sink.only()["calls"][0]
    assert call == {
        "kind": "llm",
        "name": "chat",
        "started_at": "2026-05-01T12:00:00.250000000Z",
        "ended_at": "2026-05-01T12:00:01.000000000Z",
        "output_tokens": 7,
        "prompt_tokens": UINT32_MAX,
        "total_tokens": 0,
        "model_name": "llama",
        "tool_call_count": 2,
        "metadata_snapshot": {"team": "x"},
        "annotated_request": {"messages": [{"role": "user", "content": "hi"}]},
        "annotated_response": {"message": "hello"},
    }
    assert sink.only()["id"] == "01890a5d-ac96-774b-bcce-b302099a8057"
    parse_run(sink.records[0])


def test_payloads_are_left_out_unless_asked_for() -> None:
    sink = Captured(record_payloads=False)
    with sink.run("a") as run, run.llm_call("chat") as call:
        call.set_payloads(request={"prompt": "secret"}, response={"text": "answer"})
    assert "annotated_request" not in sink.only()["calls"][0]
    assert b"secret" not in sink.records[0]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda s: s.run(""), "agent_id must not be empty"),
        (lambda s: s.run("bad\nname"), r"control character U\+000A"),
        (lambda s: s.run(42), "agent_id must be a string"),
        (lambda s: s.run("a", run_id="not-a-uuid"), "is not a UUID"),
        (lambda s: s.run("a").llm_call("x\x7f"), r"U\+007F"),
        (lambda s: s.run("a").start_call("embedding", "x"), "kind must be 'llm' or 'tool'"),
        (lambda s: s.run("a").llm_call("x").set_usage(output_tokens=-1), "output_tokens"),
        (lambda s: s.run("a").llm_call("x").set_usage(prompt_tokens=2**32), "prompt_tokens"),
        (lambda s: s.run("a").llm_call("x").set_usage(total_tokens=True), "total_tokens"),
        (lambda s: s.run("a").llm_call("x").set_usage(output_tokens=1.0), "output_tokens"),
        (lambda s: s.run("a").llm_call("x").set_tool_call_count("2"), "tool_call_count"),
        (lambda s: s.run("a").llm_call("x").set_metadata([1]), "must be a mapping"),
        (lambda s: s.run("a").llm_call("x").set_metadata({"k": object()}), "not JSON"),
        (lambda s: s.run("a").llm_call("x", started_at=datetime(2026, 1, 1)), "timezone"),
        (
            lambda s: s.run("a").add_call("llm", "x", started_at=10**18, ended_at=10**18 - 1),
            "earlier than started_at",
        ),
        (lambda s: s.run("a", started_at=10**18).end(ended_at=10**17), "earlier than started_at"),
    ],
)
def test_bad_input_gets_a_clear_error_and_records_nothing(action, message: str) -> None:
    sink = Captured()
    with pytest.raises(ValueError, match=message):
        action(sink)
    assert sink.records == []


def test_a_failed_add_call_adds_nothing() -> None:
    sink = Captured()
    run = sink.run("a")
    with pytest.raises(ValueError):
        run.add_call("llm", "x", started_at=10**18, output_tokens=-5)
    run.end()
    assert sink.only()["calls"] == []


def test_calls_on_an_ended_run_raise_and_late_ends_are_logged(caplog) -> None:
    sink = Captured()
    run = sink.run("a")
    open_call = run.llm_call("slow")
    run.end()
    run.end()  # ending twice records once
    with pytest.raises(RunEndedError):
        run.tool_call("late")
    with caplog.at_level(logging.WARNING, logger="worker.recorder.record"):
        open_call.end()
    assert "ended after its run" in caplog.text
    record = sink.only()
    assert record["calls"] == [
        {"kind": "llm", "name": "slow", "started_at": record["calls"][0]["started_at"]}
    ]


def test_a_run_whose_body_raises_is_still_recorded() -> None:
    sink = Captured()
    with pytest.raises(KeyError), sink.run("a") as run, run.llm_call("x"):
        raise KeyError("boom")
    assert [c["name"] for c in sink.only()["calls"]] == ["x"]
    assert "ended_at" in sink.only()["calls"][0]


def test_async_context_managers() -> None:
    sink = Captured()

    async def agent() -> None:
        async with sink.run("async-agent") as run:

            async def one(i: int) -> None:
                async with run.llm_call(f"c{i}") as call:
                    await asyncio.sleep(0.001 * (3 - i))
                    call.set_usage(output_tokens=i)

            await asyncio.gather(*(one(i) for i in range(3)))

    asyncio.run(agent())
    record = sink.only()
    assert [c["name"] for c in record["calls"]] == ["c0", "c1", "c2"]
    assert [c["output_tokens"] for c in record["calls"]] == [0, 1, 2]
    parse_run(sink.records[0])


def test_many_threads_recording_calls_into_one_run() -> None:
    sink = Captured()
    run = sink.run("threads")
    barrier = threading.Barrier(8)

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(200):
            with run.llm_call(f"w{worker}") as call:
                call.set_usage(output_tokens=i)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.end()
    parsed = parse_run(sink.records[0])
    assert len(parsed.calls) == 1600
    starts = [c.started_at for c in parsed.calls]
    assert starts == sorted(starts)
    for worker in range(8):
        mine = [c.output_tokens for c in parsed.calls if c.name == f"w{worker}"]
        assert mine == list(range(200))


def test_run_id_given_as_uuid_is_kept() -> None:
    sink = Captured()
    given = UUID("01890a5d-ac96-774b-bcce-b302099a8057")
    sink.run("a", run_id=given).end()
    assert sink.only()["id"] == str(given)
