"""The benchmark's load phases: closed-loop calibration and open-loop (Poisson) phases (the
gateway's added latency: `hop`)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence

import aiohttp

from benchmarks.dynamo.programs import RunResult, call_sizes, run_program
from benchmarks.dynamo.schedule import Arrival, program_sequence


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
