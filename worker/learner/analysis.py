"""SPEC section 4, steps 1-5: what one run says about each of its LLM calls.

Pure functions of a run (`Run`) and the learner config; nothing here keeps state.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple

from worker.learner.config import LearnerConfig
from worker.models import Call, Run
from worker.models.timestamps import NS_PER_MS, NS_PER_SECOND


class CallObservation(NamedTuple):
    """What one finished LLM call contributes to the trie (SPEC 4.3 and 4.5)."""

    name: str
    call_index: int
    remaining_calls: int
    interarrival_ms: int | None
    output_tokens: int
    score: float


def _whole_ms(ns: int) -> int:
    """Nanoseconds to whole milliseconds, truncated toward zero."""
    return ns // NS_PER_MS if ns >= 0 else -(-ns // NS_PER_MS)


def workflow_seconds(run: Run) -> float:
    """SPEC 4.1: the run's duration in whole milliseconds (truncated toward zero, as the
    crate takes it in both semantics), from its own end or else its latest call end."""
    end = run.ended_at
    if end is None:
        end = max((c.ended_at for c in run.calls if c.ended_at is not None), default=None)
    return 0.0 if end is None else _whole_ms(end - run.started_at) / 1000


def _interarrivals_corrected(run: Run, finished: list[Call]) -> list[int | None]:
    """Gap to the earliest LLM call (finished or not) that starts after this one ends."""
    starts = sorted(c.started_at for c in run.calls if c.kind == "llm")
    gaps: list[int | None] = []
    for call in finished:
        end: int = call.ended_at  # type: ignore[assignment]
        later = bisect_right(starts, end)
        gaps.append(_whole_ms(starts[later] - end) if later < len(starts) else None)
    return gaps


def _interarrivals_nemo_flow(run: Run) -> list[int | None]:
    """Gap to the next `llm` entry in list order; negative when the two overlapped."""
    gaps: list[int | None] = []
    waiting: int | None = None  # end of the previous LLM entry, when it finished
    for call in run.calls:
        if call.kind != "llm":
            continue
        if waiting is not None:
            gaps.append(_whole_ms(call.started_at - waiting))
        waiting = call.ended_at
    if waiting is not None:
        gaps.append(None)
    return gaps


def logical_positions(spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """SPEC 4.4: each call's group number and the size of every group.

    Calls are taken by start (stable); one that starts strictly before the current
    group's latest end joins it, otherwise it opens the next group.
    """
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    positions = [0] * len(spans)
    sizes: list[int] = []
    group_end = 0
    for i in order:
        start, end = spans[i]
        if sizes and start < group_end:
            sizes[-1] += 1
            group_end = max(group_end, end)
        else:
            sizes.append(1)
            group_end = end
        positions[i] = len(sizes) - 1
    return positions, sizes


def observe_run(run: Run, config: LearnerConfig) -> list[CallObservation]:
    """Every finished LLM call of a run, in list order, with what it teaches (SPEC 4)."""
    finished = [c for c in run.calls if c.kind == "llm" and c.ended_at is not None]
    if not finished:
        return []
    corrected = config.semantics == "corrected"
    gaps = _interarrivals_corrected(run, finished) if corrected else _interarrivals_nemo_flow(run)
    if corrected:
        spans = [(c.started_at, c.ended_at) for c in finished]
    else:  # whole Unix seconds, floored, as the crate compares them
        spans = [
            (c.started_at // NS_PER_SECOND, c.ended_at // NS_PER_SECOND)  # type: ignore[operator]
            for c in finished
        ]
    positions, sizes = logical_positions(spans)  # type: ignore[arg-type]
    scores = _scores(finished, positions, sizes, workflow_seconds(run), config)

    count = len(finished)
    seen: dict[str, int] = {}
    observations = []
    for i, call in enumerate(finished):
        seen[call.name] = seen.get(call.name, 0) + 1
        observations.append(
            CallObservation(
                name=call.name,
                call_index=seen[call.name],
                remaining_calls=count - i - 1,
                interarrival_ms=gaps[i],
                output_tokens=call.output_tokens or 0,
                score=scores[i],
            )
        )
    return observations


def _scores(
    calls: list[Call],
    positions: list[int],
    sizes: list[int],
    workflow_s: float,
    config: LearnerConfig,
) -> list[float]:
    """SPEC 4.5: raw sensitivity per call, min-max normalised over the run."""
    w = config.weights
    steps = len(sizes)
    raws = []
    for call, pos in zip(calls, positions, strict=True):
        duration_s = _whole_ms(call.ended_at - call.started_at) / 1000  # type: ignore[operator]
        critical = min(duration_s / workflow_s, 1.0) if workflow_s > 0 else 1.0
        if steps > 1:
            fanout = (steps - 1 - pos) / (steps - 1)
            position = max(1 - pos / (steps - 1), pos / (steps - 1))
        else:
            fanout, position = 0.0, 1.0
        group = sizes[pos]
        parallel = (group - 1) / group / 2 if group > 1 else 0.0
        raws.append(
            w.critical * critical
            + w.fanout * fanout
            + w.position * position
            - w.parallel * parallel
        )
    low, high = min(raws), max(raws)
    if high == low:
        return [0.5] * len(raws)
    return [(raw - low) / (high - low) for raw in raws]
