"""SPEC section 4, steps 1-5: what one run says about each of its LLM calls.

Pure functions of a run (`Run`) and the learner config; nothing here keeps state.
"""

from __future__ import annotations

from typing import Any, Final, cast

from worker.learner.bisection import bisect_after
from worker.learner.config import LearnerConfig
from worker.models import Call, Run

#: (as `worker.models.timestamps`; here as constants the compiled learner inlines)
NS_PER_MS: Final = 1_000_000
NS_PER_SECOND: Final = 1_000_000_000


#: What one finished LLM call contributes to the trie (SPEC 4.3 and 4.5): (name, call_index,
#: remaining_calls, interarrival_ms, output_tokens, score), interarrival_ms None when no
#: call follows. A plain tuple: one is built per LLM call learned, natively when compiled
#: (a NamedTuple goes through its interpreted __new__).
CallObservation = tuple[str, int, int, int | None, int, float]
#: the positions of its fields
NAME: Final = 0
CALL_INDEX: Final = 1
REMAINING_CALLS: Final = 2
INTERARRIVAL_MS: Final = 3
OUTPUT_TOKENS: Final = 4
SCORE: Final = 5


def scores_of(observations: list[CallObservation]) -> list[float]:
    """Each observation's score (the compiled code reads them off the tuples as they are:
    a fixed-length tuple's float would be unboxed and boxed anew)."""
    rows = cast(list[tuple[Any, ...]], observations)
    return [row[SCORE] for row in rows]


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


def _interarrivals_corrected(starts: list[int], spans: list[tuple[int, int]]) -> list[int | None]:
    """Gap to the earliest LLM call (finished or not: `starts`, sorted here in place) that
    starts after this one ends."""
    starts.sort()
    last = len(starts)
    gaps: list[int | None] = []
    for _, end in spans:
        later = bisect_after(starts, end)
        # a later start is strictly after the end: the gap is positive, truncated by //
        gaps.append((starts[later] - end) // NS_PER_MS if later < last else None)
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
    count = len(spans)
    order: list[int] = list(range(count))
    for i in range(1, count):
        if spans[i][0] < spans[i - 1][0]:  # usually they are in start order already
            starts = [start for start, _ in spans]
            order.sort(key=starts.__getitem__)
            break
    positions = [0] * count
    sizes: list[int] = []
    group_end = 0
    for i in order:
        start, end = spans[i]
        if sizes and start < group_end:
            sizes[-1] += 1
            if end > group_end:
                group_end = end
        else:
            sizes.append(1)
            group_end = end
        positions[i] = len(sizes) - 1
    return positions, sizes


def observe_run(
    run: Run, config: LearnerConfig, models: list[str | None] | None = None
) -> list[CallObservation]:
    """Every finished LLM call of a run, in list order, with what it teaches (SPEC 4); with
    `models`, each such call's model is appended to it, in the same order.

    The run's calls are read once: this runs for every run learned."""
    finished: list[Call] = []
    spans: list[tuple[int, int]] = []  # each finished call's (start, end)
    starts: list[int] = []  # every LLM call's start, finished or not
    for call in run.calls:
        if call.kind == "llm":
            start = call.started_at
            starts.append(start)
            end = call.ended_at
            if end is not None:
                finished.append(call)
                spans.append((start, end))
    if not finished:
        return []
    if config.semantics != "nemo-flow":  # adaptive: the corrected rules and more
        gaps = _interarrivals_corrected(starts, spans)
        steps = spans
    else:  # whole Unix seconds, floored, as the crate compares them
        gaps = _interarrivals_nemo_flow(run)
        steps = [(start // NS_PER_SECOND, end // NS_PER_SECOND) for start, end in spans]
    positions, sizes = logical_positions(steps)
    adaptive = config.adaptive_on
    if adaptive is not None and adaptive.comparable_levels:
        scores = step_shares(steps, positions, len(sizes), workflow_seconds(run))
    else:
        scores = _scores(spans, positions, sizes, workflow_seconds(run), config)

    remaining = count = len(finished)
    seen: dict[str, int] = {}
    observations: list[CallObservation] = []
    for i in range(count):
        call = finished[i]
        name = call.name
        index = seen[name] = seen.get(name, 0) + 1
        remaining -= 1
        tokens = call.output_tokens
        observations.append((name, index, remaining, gaps[i], tokens or 0, scores[i]))
        if models is not None:
            models.append(call.model_name)
    return observations


def _scores(
    spans: list[tuple[int, int]],
    positions: list[int],
    sizes: list[int],
    workflow_s: float,
    config: LearnerConfig,
) -> list[float]:
    """SPEC 4.5: raw sensitivity per call, min-max normalised over the run.

    The fanout, position and parallel terms depend only on the logical position, so they
    are computed once per position; each raw value is still summed in SPEC's order."""
    w = config.weights
    w_critical: float = w.critical
    w_fanout: float = w.fanout
    w_position: float = w.position
    w_parallel: float = w.parallel
    steps = len(sizes)
    fanout_terms: list[float] = []  # per position: the weighted fanout, position and
    position_terms: list[float] = []  # parallel terms
    parallel_terms: list[float] = []
    for pos in range(steps):
        group = sizes[pos]
        if steps > 1:
            fanout = (steps - 1 - pos) / (steps - 1)
            position = max(1 - pos / (steps - 1), pos / (steps - 1))
        else:
            fanout, position = 0.0, 1.0
        parallel = (group - 1) / group / 2 if group > 1 else 0.0
        fanout_terms.append(w_fanout * fanout)
        position_terms.append(w_position * position)
        parallel_terms.append(w_parallel * parallel)
    raws: list[float] = []
    low = high = 0.0
    for i in range(len(spans)):
        start, end = spans[i]
        span = end - start
        # _whole_ms and min inlined (this runs for every LLM call learned)
        duration_s = (span // NS_PER_MS if span >= 0 else -(-span // NS_PER_MS)) / 1000
        if workflow_s > 0:
            critical = duration_s / workflow_s
            if critical > 1.0:
                critical = 1.0
        else:
            critical = 1.0
        pos = positions[i]
        raw = w_critical * critical + fanout_terms[pos] + position_terms[pos] - parallel_terms[pos]
        if not raws or raw < low:
            low = raw
        if not raws or raw > high:
            high = raw
        raws.append(raw)
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
    # per step, the call with the earliest start and the one with the latest end (their
    # indices: the nanoseconds are not copied, which would box each of them again)
    earliest = [-1] * steps
    latest = [-1] * steps
    for i in range(len(spans)):
        start, end = spans[i]
        pos = positions[i]
        j = earliest[pos]
        if j < 0 or start < spans[j][0]:
            earliest[pos] = i
        j = latest[pos]
        if j < 0 or end > spans[j][1]:
            latest[pos] = i
    shares: list[float] = []
    for pos in range(steps):
        end = spans[latest[pos]][1]
        span = (end if end > 0 else 0) - spans[earliest[pos]][0]  # the end is at least 0
        share = (span // NS_PER_MS if span >= 0 else -(-span // NS_PER_MS)) / 1000 / workflow_s
        shares.append(share if share < 1.0 else 1.0)
    return [shares[pos] for pos in positions]
