"""Each piece of the adaptive rule set on hand-built runs, every number worked out by hand:
back-off, decay (shift), hysteresis, comparable levels."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.runs import llm, run
from worker.learner import AdaptiveSettings, AgentState, LearnerConfig, state_hints, trie_dict
from worker.learner.analysis import SCORE, observe_run
from worker.learner.backoff import rank_table
from worker.learner.exact_sums import Mean
from worker.learner.hints import sensitivity_level
from worker.learner.hysteresis import Levels, next_level
from worker.learner.shift import Streak
from worker.models import RunRecord

OFF = AdaptiveSettings.off()


def only(**pieces: object) -> LearnerConfig:
    return LearnerConfig(semantics="adaptive", adaptive=OFF.model_copy(update=pieces))


def learn(config: LearnerConfig, *records: RunRecord) -> AgentState:
    state = AgentState()
    for record in records:
        state.learn(record, config)
    return state


# --- back-off ---------------------------------------------------------------------------------


def test_ranks_are_ceil_q_times_n_plus_k() -> None:
    ranks = rank_table(1.0)
    assert ranks[9] == (9, 10)  # ceil(0.9 * 10) = 9, ceil(0.95 * 10) = 10: beyond 9 samples
    assert ranks[4] == (5, 5)  # beyond 4 samples for both
    assert ranks[100] == (91, 96)
    assert rank_table(0.5)[5] == (5, 6)  # ceil(0.9 * 5.5) = 5


def fan_out(r: int) -> RunRecord:
    """Three parallel calls `s` of 10r, 10r + 1, 10r + 2 tokens (call indices 1, 2, 3)."""
    return run(*(llm("s", 0, 100, 10 * r + i) for i in range(3)), ended=100)


def test_a_group_short_of_samples_leans_on_its_node_then_the_root() -> None:
    """s#1 has 10, 20, 30, 40: its rank ceil(0.9 * 5) = 5 is beyond them, so its p90 is the
    larger of its top sample (40) and its node's any-index p90: that group has the 12
    samples 10..42, rank ceil(0.9 * 13) = 12, so 42. p95: rank 5 for s#1, 13 for the node
    (beyond its 12), then the root's (the same 12 samples, beyond too: its top, 42)."""
    config = only(backoff_samples=1.0)
    state = learn(config, *(fan_out(r) for r in range(1, 5)))
    node = trie_dict("agent", state, config)["root"]["children"]["s"]
    first = node["predictions_by_call_index"]["1"]["output_tokens"]
    assert (first["p50"], first["p90"], first["p95"]) == (25.0, 42.0, 42.0)
    assert node["predictions_any_index"]["output_tokens"]["p90"] == 42.0
    spec = learn(LearnerConfig(), *(fan_out(r) for r in range(1, 5)))
    plain = trie_dict("agent", spec, LearnerConfig())["root"]["children"]["s"]
    assert plain["predictions_by_call_index"]["1"]["output_tokens"]["p90"] == 37.0  # rank 2.7
    hints = state_hints(state, config)
    assert hints is not None and hints["osl"] == 42  # corrected: 40.9, so 41


def test_the_scored_osl_is_the_back_off_one() -> None:
    """A fifth run's s#1 of 41 tokens is within the back-off osl (42), not the SPEC 5 one
    (37)."""
    config = only(backoff_samples=1.0)
    for conf, covered in ((config, True), (LearnerConfig(), False)):
        state = learn(conf, *(fan_out(r) for r in range(1, 5)))
        scores = state.learn(run(llm("s", 0, 100, 41), ended=100), conf).scores
        assert (scores[0].source, scores[0].covered) == ("trie", covered)


def test_with_enough_samples_the_rank_is_the_samples_own() -> None:
    """Ten samples 10..100: rank ceil(0.9 * 11) = 10, the 100 (SPEC 5: 91)."""
    config = only(backoff_samples=1.0)
    state = learn(config, *(run(llm("a", 0, 100, 10 * r), ended=100) for r in range(1, 11)))
    tokens = trie_dict("agent", state, config)["root"]["children"]["a"]["predictions_any_index"]
    assert tokens["output_tokens"]["p90"] == 100.0


# --- decay ------------------------------------------------------------------------------------


def test_a_streak_holds_its_runs_until_they_make_a_shift_or_it_ends() -> None:
    """observe answers (the runs to learn now, in order; whether they make a shift)."""
    share, calls = 0.75, 3  # shift_share, shift_calls
    streak = Streak()
    a, b, c, d, e = ([], ["a"]), ([], ["b"]), ([], ["c"]), ([], ["d"]), ([], ["e"])
    assert streak.observe((4, 3, 0), a, share, calls) == ([a], True)  # 3 of 4 above: 3 beyond
    assert streak.side == 0 and not streak.runs  # a shift starts the streak over
    assert streak.observe((4, 2, 0), a, share, calls) == ([a], False)  # 2 of 4: learned now
    assert streak.observe((2, 2, 0), a, share, calls) == ([], False)  # beyond: held
    assert streak.observe((1, 1, 0), b, share, calls) == ([a, b], True)  # 3 beyond: a shift
    assert streak.observe((2, 0, 2), c, share, calls) == ([], False)  # below: held
    assert streak.observe((2, 2, 0), d, share, calls) == ([c], False)  # above: c learned, d held
    assert (streak.side, streak.beyond, streak.runs) == (1, 2, [d])
    assert streak.observe((0, 0, 0), e, share, calls) == ([d, e], False)  # nothing eligible
    assert streak.side == 0 and not streak.runs


def tokens_run(*tokens: int) -> RunRecord:
    return run(*(llm(f"c{i}", 100 * i, 100 * i + 50, t) for i, t in enumerate(tokens)))


#: six runs of one call around 100 tokens: p50 100, top 104
STEADY = [100, 96, 104, 98, 102, 100]


def test_an_agent_forgets_what_it_learned_before_its_calls_changed() -> None:
    """Six runs of ~100 tokens, then 1000: two runs beyond (shift_calls 2) and the agent
    keeps only those two."""
    config = only(shift_calls=2, shift_min_samples=5)
    state = learn(config, *map(tokens_run, STEADY))
    state.learn(tokens_run(1000), config)
    assert state.root.any_index.output_tokens.count == 6  # one run beyond: held
    state.learn(tokens_run(1010), config)
    assert state.runs == 8
    tokens = state.root.any_index.output_tokens
    assert (tokens.count, tokens.mean) == (2, 1005.0)
    assert state.adaptive is not None and state.adaptive.streak.side == 0


def test_a_drop_is_a_shift_too() -> None:
    """Below 2 p50 - osl: p50 100, osl 104 (rank 7 is beyond the 6 samples: the top), so
    under 96."""
    config = only(shift_calls=2, shift_min_samples=5)
    state = learn(config, *map(tokens_run, STEADY))
    state.learn(tokens_run(3), config)
    state.learn(tokens_run(4), config)
    assert state.root.any_index.output_tokens.pending == [3, 4]


def test_a_run_within_its_hints_ends_the_streak() -> None:
    config = only(shift_calls=2, shift_min_samples=5)
    state = learn(config, *map(tokens_run, STEADY))
    for tokens in (1000, 100, 1000):
        state.learn(tokens_run(tokens), config)
    # nothing forgotten: the first 1000 was held, then learned before the 100; the last held
    assert state.root.any_index.output_tokens.count == 8
    assert state.adaptive is not None and len(state.adaptive.streak.runs) == 1


# --- hysteresis -------------------------------------------------------------------------------


def mean_at(position: float, scale: int = 5) -> Mean:
    """A mean whose level position, mean * (scale - 1), is `position`."""
    mean = Mean()
    mean.add(position / (scale - 1))
    return mean


def test_a_level_moves_only_past_the_boundary_by_the_margin() -> None:
    """Scale 5: level 2 is positions [0.5, 1.5), 3 is [1.5, 2.5). With margin 0.1, 2 turns
    3 from 1.6 on, and 3 turns 2 only below 1.4."""
    assert next_level(2, mean_at(1.55).mean, 5, 0.1) == 2
    assert next_level(2, mean_at(1.6).mean, 5, 0.1) == 3
    assert next_level(3, mean_at(1.45).mean, 5, 0.1) == 3
    assert next_level(3, mean_at(1.35).mean, 5, 0.1) == 2
    assert next_level(2, mean_at(2.7).mean, 5, 0.1) == 4  # far past: the SPEC 5 level
    assert next_level(None, mean_at(1.55).mean, 5, 0.1) == 3  # the first: SPEC 5's


@given(
    value=st.floats(0, 1, allow_nan=False),
    previous=st.none() | st.integers(1, 5),
    scale=st.integers(2, 9),
)
def test_without_a_margin_the_level_is_spec_5s(
    value: float, previous: int | None, scale: int
) -> None:
    mean = Mean()
    mean.add(value)
    assert next_level(previous, mean.mean, scale, 0.0) == sensitivity_level(mean, scale)


def test_a_mean_hovering_at_a_boundary_flips_without_hysteresis_only() -> None:
    positions = [1.45, 1.55, 1.45, 1.62, 1.5, 1.45, 1.55]
    for margin, want in ((0.0, [2, 3, 2, 3, 3, 2, 3]), (0.1, [2, 2, 2, 3, 3, 3, 3])):
        levels = Levels()
        got = []
        for position in positions:
            mean = mean_at(position)
            levels.update((None, 0), mean, 5, margin)
            got.append(levels.get((None, 0)))
        assert got == want


def test_levels_survive_the_state_bytes() -> None:
    config = only(hysteresis=0.2)
    state = learn(config, tokens_run(1, 2), tokens_run(3))
    extras = state.adaptive
    assert extras is not None and extras.levels.levels
    again = AgentState.from_bytes(state.to_bytes())
    assert again.adaptive is not None and again.adaptive.levels == extras.levels


# --- comparable levels ------------------------------------------------------------------------


def test_a_calls_score_is_its_steps_share_of_the_run() -> None:
    """a takes 1 s of a 4 s run; b's fan-out (two calls, 1..1.5 s and 1..3 s) is one step of
    2 s, so both b calls score 0.5 however long each took; c 1 s. Not normalised."""
    record = run(
        llm("a", 0, 1000, 1),
        llm("b", 1000, 1500, 1),
        llm("b", 1000, 3000, 1),
        llm("c", 3000, 4000, 1),
        ended=4000,
    )
    scores = [o[SCORE] for o in observe_run(record, only(comparable_levels=True))]
    assert scores == [0.25, 0.5, 0.5, 0.25]
    spec = [o[SCORE] for o in observe_run(record, LearnerConfig())]
    assert min(spec) == 0.0 and max(spec) == 1.0  # SPEC 4.5: normalised within the run
    instant = run(llm("a", 0, 0, 1), ended=0)
    assert [o[SCORE] for o in observe_run(instant, only(comparable_levels=True))] == [1.0]
