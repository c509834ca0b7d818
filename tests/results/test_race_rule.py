"""The elimination rule of a race (:mod:`results.analysis.race`): simulated races with known means, replayed round by
round as a driver would, and hand-made tables for the rule's edges."""
import numpy as np
import pandas as pd
import pytest

from results.analysis.race import RUN_COLUMNS, RaceState, next_runs, race_state

MEANS = {"a": 10.0, "b": 10.0, "c": 10.05, "d": 11.5}  # a and b tie; c is a hair worse; d is clearly worse
ROUNDS = 10
SEEDS = list(range(100, 100 + ROUNDS))


def _simulate(rng: np.random.Generator, sd: float = 0.3, shared_sd: float = 1.0) -> RaceState:
    """One race as a driver runs it: each run's value is its candidate's mean, plus a component shared by all
    runs of one seed (what pairing by seed removes), plus its own Gaussian noise."""
    candidates = list(MEANS)
    shared = {s: rng.normal(0, shared_sd) for s in SEEDS}
    rows = []
    while True:
        state = race_state(pd.DataFrame(rows, columns=RUN_COLUMNS), candidates, ROUNDS)
        if state.done:
            return state
        for c, seed, r in next_runs(state, candidates, SEEDS):
            rows.append((c, r, seed, MEANS[c] + shared[seed] + rng.normal(0, sd)))


def _runs(values: dict[str, list[float]], seeds=SEEDS) -> pd.DataFrame:
    """A table of runs: candidate -> its values in rounds 1, 2, ..."""
    return pd.DataFrame([(c, r, seeds[r - 1], v) for c, vs in values.items() for r, v in enumerate(vs, start=1)],
                        columns=RUN_COLUMNS)


def test_a_simulated_race_drops_the_worse_keeps_the_tied_and_picks_a_best():
    """Over 200 seeded races: the clearly worse candidate (1.5 above, 3.5 seed-noise sd of a difference) is
    dropped in every race, mostly at the first test (round 3), which it could not be without pairing (the
    shared per-seed component has sd 1.0); each candidate tied with the best survives to the end in >= 80%
    (the 5% Holm-adjusted test looks once per round from round 3, against the leader of the moment, so false
    drops add up to about 12-15% here); the winner is one of the two best in >= 70% (c, 0.05 worse, is
    within noise of them and wins the rest)."""
    states = [_simulate(np.random.default_rng(rep)) for rep in range(200)]
    assert all(s.done and s.round <= ROUNDS and s.winner in s.survivors for s in states)
    dropped_d = [s.dropped["d"][0] for s in states if "d" in s.dropped]
    assert len(dropped_d) == 200
    assert np.mean(np.array(dropped_d) == 3) >= 0.75
    for tied in ("a", "b"):
        assert np.mean([tied in s.survivors for s in states]) >= 0.80
    assert np.mean([s.winner in ("a", "b") for s in states]) >= 0.70
    assert all(s.winner != "d" for s in states)


def test_replaying_is_deterministic_and_ignores_the_order_of_rows():
    rng = np.random.default_rng(5)
    runs = _runs({c: list(MEANS[c] + rng.normal(0, 0.3, size=4)) for c in MEANS})
    first = race_state(runs, list(MEANS), ROUNDS)
    assert race_state(runs, list(MEANS), ROUNDS) == first
    assert race_state(runs.sample(frac=1, random_state=1), list(MEANS), ROUNDS) == first
    assert first.round == 4 and "d" in first.dropped and first.dropped["d"][0] == 3
    reason = first.dropped["d"][1]
    assert "worse than the leader" in reason and "Holm-adjusted p" in reason and "\n" not in reason


def test_the_rule_by_hand():
    """d is 1.0 above a on every seed but one: p tiny, dropped at round 3 (the first test); b never differs
    from a by a constant sign: kept. Means, leader and the next runs follow."""
    runs = _runs({"a": [1.0, 2.0, 3.0], "b": [1.1, 1.9, 3.05], "d": [2.0, 3.1, 4.0]})
    state = race_state(runs, ["a", "b", "d"], rounds=5)
    assert state.round == 3 and state.survivors == ("a", "b") and list(state.dropped) == ["d"]
    assert state.dropped["d"][0] == 3 and "+1.033" in state.dropped["d"][1]
    assert state.leader == "a" and state.winner is None and not state.done
    assert state.means == pytest.approx({"a": 2.0, "b": 6.05 / 3, "d": 9.1 / 3})
    assert state.seeds == tuple(SEEDS[:3]) and state.partial == () and state.ignored == 0
    assert next_runs(state, ["a", "b", "d"], SEEDS) == [("a", SEEDS[3], 4), ("b", SEEDS[3], 4)]
    # before min_rounds nothing is judged, however clear
    assert race_state(runs, ["a", "b", "d"], rounds=5, min_rounds=4).survivors == ("a", "b", "d")


def test_constant_differences_where_the_t_test_is_undefined():
    """scipy's paired t-test is NaN for a zero-variance difference: an all-positive constant one reads as
    p = 0 (dropped), an all-zero one as p = 1 (kept)."""
    runs = _runs({"a": [1.0, 2.0, 3.0], "same": [1.0, 2.0, 3.0], "worse": [1.5, 2.5, 3.5]})
    state = race_state(runs, ["a", "same", "worse"], rounds=5)
    assert state.survivors == ("a", "same") and state.dropped["worse"][0] == 3
    assert "p = 0 <" in state.dropped["worse"][1]
    assert state.leader == "a"  # the first of equal means
    # equal but for rounding (0.1 + 0.2 != 0.3 in float64): still no difference, not a t-test on the last bits
    runs = _runs({"a": [0.1 + 0.2, 0.3, 0.7, 0.5], "same": [0.3, 0.1 + 0.2, 0.7, 0.5]})
    assert race_state(runs, ["a", "same"], rounds=5).survivors == ("a", "same")
    runs = _runs({"a": [0.1 + 0.2, 0.3, 0.7], "worse": [1.3, 1.1 + 0.2, 1.7]})
    assert race_state(runs, ["a", "worse"], rounds=5).survivors == ("a",)


def test_a_partially_complete_round_is_not_judged():
    runs = _runs({"a": [1.0, 2.0, 3.0], "b": [1.1, 1.9, 3.05], "d": [2.0, 3.1]})  # d has not run round 3
    state = race_state(runs, ["a", "b", "d"], rounds=5)
    assert state.round == 2 and state.survivors == ("a", "b", "d") and not state.dropped
    assert state.partial == ("a", "b") and state.means["d"] == pytest.approx(2.55)
    assert next_runs(state, ["a", "b", "d"], SEEDS) == [("d", SEEDS[2], 3)]  # only what round 3 still lacks


def test_done_when_one_survivor_is_left_or_every_round_is_run():
    runs = _runs({"a": [1.0, 2.0, 3.0], "d": [2.0, 3.1, 4.0]})
    state = race_state(runs, ["a", "d"], rounds=5)
    assert state.done and state.survivors == ("a",) and state.winner == "a" and state.leader == "a"
    assert next_runs(state, ["a", "d"], SEEDS) == []
    runs = _runs({"a": [1.0, 2.0], "b": [0.9, 1.9]})
    state = race_state(runs, ["a", "b"], rounds=2)  # every round run, nobody dropped: the lowest mean wins
    assert state.done and state.survivors == ("a", "b") and state.winner == "b"  # 1.4 against 1.5
    assert next_runs(state, ["a", "b"], SEEDS) == []
    runs = _runs({"a": [1.0, 2.0], "b": [1.5, 1.5]})
    assert race_state(runs, ["b", "a"], rounds=2).winner == "b"  # equal means: the first candidate


def test_an_empty_table_is_a_race_not_started():
    for runs in (pd.DataFrame(columns=RUN_COLUMNS), pd.DataFrame()):
        state = race_state(runs, ["a", "b"], rounds=3)
        assert (state.round, state.survivors, state.leader, state.done, state.winner) == (0, ("a", "b"), None,
                                                                                         False, None)
        assert np.isnan(state.means["a"])
        assert next_runs(state, ["a", "b"], SEEDS) == [("a", SEEDS[0], 1), ("b", SEEDS[0], 1)]
    single = race_state(pd.DataFrame(), ["a"], rounds=3)
    assert single.done and single.winner == "a" and next_runs(single, ["a"], SEEDS) == []


def test_rows_after_a_drop_are_ignored_and_counted():
    runs = _runs({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.1, 1.9, 3.05, 4.0], "d": [2.0, 3.1, 4.0, 50.0]})
    state = race_state(runs, ["a", "b", "d"], rounds=5)
    assert state.dropped["d"][0] == 3 and state.ignored == 1 and state.means["d"] == pytest.approx(9.1 / 3)
    assert state.round == 4


def test_bad_arguments_raise():
    runs = _runs({"a": [1.0, 2.0], "b": [1.1, 1.9]})
    with pytest.raises(ValueError, match="min_rounds must be at least 2"):
        race_state(runs, ["a", "b"], rounds=5, min_rounds=1)
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        race_state(runs, ["a", "b"], rounds=0)
    with pytest.raises(ValueError, match="alpha must lie in"):
        race_state(runs, ["a", "b"], rounds=5, alpha=0)
    with pytest.raises(ValueError, match="candidates must be distinct"):
        race_state(runs, ["a", "a", "b"], rounds=5)
    with pytest.raises(ValueError, match="candidates must name at least one"):
        race_state(runs, [], rounds=5)
    with pytest.raises(ValueError, match="not among candidates"):
        race_state(runs, ["a"], rounds=5)
    with pytest.raises(ValueError, match="missing \\['value'\\]"):
        race_state(runs.drop(columns="value"), ["a", "b"], rounds=5)
    with pytest.raises(ValueError, match="rounds must be integers from 1 to rounds \\(1\\)"):
        race_state(runs, ["a", "b"], rounds=1)
    with pytest.raises(ValueError, match="values must be finite"):
        race_state(runs.assign(value=[1.0, np.nan, 1.0, 2.0]), ["a", "b"], rounds=5)
    with pytest.raises(ValueError, match="round 1 ran seeds 100 and 7"):
        race_state(runs.assign(seed=[100, 101, 7, 101]), ["a", "b"], rounds=5)
    with pytest.raises(ValueError, match="candidate 'a' twice in round 1"):
        race_state(pd.concat([runs, runs.iloc[:1]]), ["a", "b"], rounds=5)
    with pytest.raises(ValueError, match="twice with one seed"):
        race_state(runs.assign(seed=100), ["a", "b"], rounds=5)
    state = race_state(runs, ["a", "b"], rounds=5)
    with pytest.raises(ValueError, match="rounds \\(5\\) must not exceed len\\(seeds\\) \\(4\\)"):
        next_runs(state, ["a", "b"], SEEDS[:4])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        next_runs(state, ["a", "b"], [100, 101, 101, 102, 103])
    with pytest.raises(ValueError, match="ran seeds \\[100, 101\\], but seeds begins \\[1, 2\\]"):
        next_runs(state, ["a", "b"], [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="survivors \\['b'\\] are not among candidates"):
        next_runs(state, ["a"], SEEDS)
