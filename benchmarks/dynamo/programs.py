"""The agent programs the Dynamo benchmark runs, and one run of them over HTTP.

Three programs, as a platform team would see them (sizes via `max_tokens`, each call drawn
+-30% around its step's mean from the run's seed; the mocker emits exactly `max_tokens`):

- `chat-assistant`: a user waits; a chain of 4 calls, each after the previous one;
- `researcher`: a planner, 6 parallel `search-summarize` calls, then a writer;
- `batch-tagger`: background work; 8 parallel `tag-document` calls.

Nothing here reaches the gateway's hints: the worker learns the programs from the runs the
gateway records, and the policies use what it learned.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from devtools.dynamo.model_dir import MODEL_NAME


@dataclass(frozen=True)
class Step:
    """`count` calls named `name` sent together (a fan-out when > 1)."""

    name: str
    count: int
    max_tokens: int
    prompt_words: int


PROGRAMS: dict[str, tuple[Step, ...]] = {
    "chat-assistant": (
        Step("understand-request", 1, 40, 120),
        Step("plan-answer", 1, 120, 200),
        Step("draft-reply", 1, 300, 260),
        Step("polish-reply", 1, 220, 400),
    ),
    "researcher": (
        Step("plan-research", 1, 180, 150),
        Step("search-summarize", 6, 240, 350),
        Step("write-report", 1, 700, 500),
    ),
    "batch-tagger": (Step("tag-document", 8, 30, 250),),
}
_FILLER = (
    "customer order invoice shipping delay refund policy warranty product review summary "
    "market report quarterly revenue growth forecast risk analysis competitor pricing data "
    "source citation evidence claim document label category sentiment topic keyword"
)


@dataclass
class CallResult:
    name: str
    status: int
    #: seconds from sending to the first streamed token, and to the end of the response
    ttft_s: float
    latency_s: float
    #: monotonic time the response ended
    ended: float = 0.0


@dataclass
class RunResult:
    program: str
    run_id: str
    #: monotonic seconds: when the run was due (its arrival) and when its last call ended
    arrival: float
    ended: float = 0.0
    calls: list[CallResult] = field(default_factory=list)

    @property
    def makespan_s(self) -> float:
        return self.ended - self.arrival

    @property
    def complete(self) -> bool:
        expected = sum(step.count for step in PROGRAMS[self.program])
        return len(self.calls) == expected and all(c.status == 200 for c in self.calls)


def call_sizes(program: str, seed: int) -> list[list[int]]:
    """max_tokens per call of each step, drawn from the run's seed."""
    rng = random.Random(seed)
    return [
        [max(1, round(step.max_tokens * rng.uniform(0.7, 1.3))) for _ in range(step.count)]
        for step in PROGRAMS[program]
    ]


def _prompt(salt: str, run_id: str, step: Step, i: int, rng: random.Random) -> str:
    words = " ".join(rng.choices(_FILLER.split(), k=step.prompt_words))
    return f"[{salt} {run_id}] {step.name} #{i}: {words}"


async def _call(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict[str, object]
) -> CallResult:
    start = time.monotonic()
    first: float | None = None
    name = headers.get("x-agent-call-name", "")
    try:
        async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
            if response.status != 200:
                await response.read()
                end = time.monotonic()
                return CallResult(name, response.status, 0.0, end - start, end)
            async for line in response.content:
                if first is None and line.startswith(b"data:") and b'"content"' in line:
                    first = time.monotonic()
    except (aiohttp.ClientError, TimeoutError):
        end = time.monotonic()
        return CallResult(name, 599, 0.0, end - start, end)
    end = time.monotonic()
    return CallResult(name, 200, (first or end) - start, end - start, end)


async def run_program(
    session: aiohttp.ClientSession,
    base_url: str,
    program: str,
    run_id: str,
    seed: int,
    salt: str,
    arrival: float,
    *,
    agent_headers: bool,
) -> RunResult:
    """One run: its steps in order, each step's calls together; with `agent_headers` the
    gateway sees `x-agent-id`, `x-agent-run-id`, `x-agent-call-name` (and the run's end)."""
    result = RunResult(program, run_id, arrival)
    rng = random.Random(seed ^ 0x5EED)
    steps = PROGRAMS[program]
    url = base_url + "/v1/chat/completions"
    for s, (step, sizes) in enumerate(zip(steps, call_sizes(program, seed), strict=True)):
        calls = []
        for i, max_tokens in enumerate(sizes):
            headers = {"Content-Type": "application/json"}
            if agent_headers:
                headers.update(
                    {
                        "x-agent-id": program,
                        "x-agent-run-id": run_id,
                        "x-agent-call-name": step.name,
                    }
                )
                if s == len(steps) - 1 and i == len(sizes) - 1:
                    headers["x-agent-run-end"] = "true"
            body = {
                "model": MODEL_NAME,
                "messages": [{"role": "user", "content": _prompt(salt, run_id, step, i, rng)}],
                "max_tokens": max_tokens,
                "stream": True,
            }
            calls.append(_call(session, url, headers, body))
        done = await asyncio.gather(*calls)
        for call in done:
            call.name = step.name
        result.calls.extend(done)
    result.ended = time.monotonic()
    return result
