"""SPEC section 4, steps 1-5: what one run says about each of its LLM calls.

Pure functions of a run (`Run`) and the learner config; nothing here keeps state.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from functools import partial
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


#: a CallObservation from a tuple of its six fields, without the generated `__new__` (a
#: Python-level call that costs twice the tuple): it runs for every LLM call learned
new_observation: Callable[[tuple[str, int, int, int | None, int, float]], CallObservation] = (
    partial(tuple.__new__, CallObservation)
)


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
    starts = sorted([c.started_at for c in run.calls if c.kind == "llm"])
    last = len(starts)
    gaps: list[int | None] = []
    append = gaps.append
    for call in finished:
        end: int = call.ended_at  # type: ignore[assignment]
        later = bisect_right(starts, end)
        # a later start is strictly after the end: the gap is positive, truncated by //
        append((starts[later] - end) // NS_PER_MS if later < last else None)
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
    starts = [start for start, _ in spans]
    order = sorted(range(len(spans)), key=starts.__getitem__)
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
    corrected = config.semantics != "nemo-flow"  # adaptive: the corrected rules and more
    gaps = _interarrivals_corrected(run, finished) if corrected else _interarrivals_nemo_flow(run)
    if corrected:
        spans = [(c.started_at, c.ended_at) for c in finished]
    else:  # whole Unix seconds, floored, as the crate compares them
        spans = [
            (c.started_at // NS_PER_SECOND, c.ended_at // NS_PER_SECOND)  # type: ignore[operator]
            for c in finished
        ]
    positions, sizes = logical_positions(spans)  # type: ignore[arg-type]
    adaptive = config.adaptive_on
    if adaptive is not None and adaptive.comparable_levels:
        scores = step_shares(spans, positions, len(sizes), workflow_seconds(run))  # type: ignore[arg-type]
    else:
        scores = _scores(finished, positions, sizes, workflow_seconds(run), config)

    remaining = len(finished)
    seen: dict[str, int] = {}
    observations: list[CallObservation] = []
    append = observations.append
    for call, gap, score in zip(finished, gaps, scores, strict=True):
        name = call.name
        index = seen[name] = seen.get(name, 0) + 1
        remaining -= 1
        append(new_observation((name, index, remaining, gap, call.output_tokens or 0, score)))
    return observations


def _scores(
    calls: list[Call],
    positions: list[int],
    sizes: list[int],
    workflow_s: float,
    config: LearnerConfig,
) -> list[float]:
    """SPEC 4.5: raw sensitivity per call, min-max normalised over the run.

    The fanout, position and parallel terms depend only on the logical position, so they
    are computed once per position; each raw value is still summed in SPEC's order."""
    w = config.weights
    w_critical = w.critical
    steps = len(sizes)
    terms = []  # per position: the weighted fanout, position and parallel terms
    for pos, group in enumerate(sizes):
        if steps > 1:
            fanout = (steps - 1 - pos) / (steps - 1)
            position = max(1 - pos / (steps - 1), pos / (steps - 1))
        else:
            fanout, position = 0.0, 1.0
        parallel = (group - 1) / group / 2 if group > 1 else 0.0
        terms.append((w.fanout * fanout, w.position * position, w.parallel * parallel))
    raws: list[float] = []
    append = raws.append
    for call, pos in zip(calls, positions, strict=True):
        span = call.ended_at - call.started_at  # type: ignore[operator]
        # _whole_ms and min inlined (this runs for every LLM call learned)
        duration_s = (span // NS_PER_MS if span >= 0 else -(-span // NS_PER_MS)) / 1000
        if workflow_s > 0:
            critical = duration_s / workflow_s
            if critical > 1.0:
                critical = 1.0
        else:
            critical = 1.0
        fanout_term, position_term, parallel_term = terms[pos]
        append(w_critical * critical + fanout_term + position_term - parallel_term)
    low, high = min(raws), max(raws)
    if high == low:
        return [0.5] * len(raws)
    return [(raw - low) / (high - low) for raw in raws]


def step_shares(
    spans: list[tuple[int, int]], positions: list[int], steps: int, workflow_s: float
) -> list[float]:
    """The `adaptive` score with comparable levels: each call's step (its group, SPEC 4.4)
    as a share of the run's duration, `min((step end - step start) / W, 1)` with the span
    in whole milliseconds, truncated (1 when W = 0). Calls of one step share it, so
    interchangeable parallel calls are never told apart, and it is not normalised within
    the run: a share means the same in every agent."""
    if workflow_s <= 0:
        return [1.0] * len(spans)
    starts: list[int | None] = [None] * steps
    ends = [0] * steps
    for (start, end), pos in zip(spans, positions, strict=True):
        first = starts[pos]
        if first is None or start < first:
            starts[pos] = start
        if end > ends[pos]:
            ends[pos] = end
    shares = []
    for first, end in zip(starts, ends, strict=True):
        span = end - first  # type: ignore[operator]
        share = (span // NS_PER_MS if span >= 0 else -(-span // NS_PER_MS)) / 1000 / workflow_s
        shares.append(share if share < 1.0 else 1.0)
    return [shares[pos] for pos in positions]
