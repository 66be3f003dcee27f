"""The benchmark's load phases: closed-loop calibration, open-loop (Poisson) phases, and the
gateway's added latency."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from benchmarks.dynamo.programs import RunResult, call_sizes, run_program
from benchmarks.dynamo.schedule import Arrival, program_sequence
from devtools.dynamo.model_dir import MODEL_NAME


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=900),
    )


async def calibrate(url: str, in_flight: int, seconds: float, warmup_s: float, seed: int) -> float:
    """Capacity in runs/s of the mix: `in_flight` runs kept going (each finished run
    replaced by the next of a seeded mix) for `seconds`; the output tokens of the calls
    that ended after `warmup_s`, per second, over the mix's mean output tokens per run.
    (Counting whole runs in a short window is lumpy: runs started together end together.)"""
    sequence = program_sequence(100_000, seed)
    runs = iter(sequence)
    salt = f"calibrate-{uuid.uuid4().hex[:8]}"
    tokens = 0
    start = time.monotonic()
    stop = start + seconds

    async def worker(s: aiohttp.ClientSession) -> None:
        nonlocal tokens
        while time.monotonic() < stop:
            program, run_seed = next(runs)
            sizes = call_sizes(program, run_seed)
            result = await run_program(
                s,
                url,
                program,
                uuid.uuid4().hex,
                run_seed,
                salt,
                time.monotonic(),
                agent_headers=False,
            )
            for call, size in zip(result.calls, (n for step in sizes for n in step), strict=True):
                if call.status == 200 and warmup_s <= call.ended - start <= seconds:
                    tokens += size

    async with session() as s:
        await asyncio.gather(*(worker(s) for _ in range(in_flight)))
    sample = sequence[:3000]
    per_run = statistics.fmean(sum(map(sum, call_sizes(p, seed))) for p, seed in sample)
    return tokens / (seconds - warmup_s) / per_run


async def open_loop(
    url: str, schedule: Sequence[Arrival], *, agent_headers: bool, salt: str
) -> list[RunResult]:
    """Every run of `schedule` started at its time (whatever is still running); all results."""
    tasks: list[asyncio.Task[RunResult]] = []
    async with session() as s:
        start = time.monotonic()
        for i, arrival in enumerate(schedule):
            due = start + arrival.at_s
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            run_id = f"{salt}-{i}"
            tasks.append(
                asyncio.create_task(
                    run_program(
                        s,
                        url,
                        arrival.program,
                        run_id,
                        arrival.seed,
                        salt,
                        due,
                        agent_headers=agent_headers,
                    )
                )
            )
        return list(await asyncio.gather(*tasks))


@dataclass(frozen=True)
class AddedLatency:
    p50_ms: float
    p90_ms: float
    requests: int


async def added_latency(direct: str, gateway: str, pairs: int = 200) -> AddedLatency:
    """Sequential 1-token requests, alternating straight to the frontend and through the
    gateway (with agent headers: resolved and rendered); the gateway's percentiles minus
    the direct ones."""
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    body = orjson.dumps(
        {"model": MODEL_NAME, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}
    )
    async with session() as s:
        for i in range(pairs):
            for target, url in (("direct", direct), ("gateway", gateway)):
                headers = {
                    "Content-Type": "application/json",
                    "x-agent-id": "chat-assistant",
                    "x-agent-run-id": f"probe-{i}",
                    "x-agent-call-name": "plan-answer",
                    "x-agent-run-end": "true",
                }
                start = time.perf_counter()
                async with s.post(url + "/v1/chat/completions", data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{target}: status {r.status}")
                times[target].append(time.perf_counter() - start)

    def q(values: list[float], n: int) -> float:
        return statistics.quantiles(values, n=100)[n - 1]

    return AddedLatency(
        (statistics.median(times["gateway"]) - statistics.median(times["direct"])) * 1000,
        (q(times["gateway"], 90) - q(times["direct"], 90)) * 1000,
        pairs,
    )
