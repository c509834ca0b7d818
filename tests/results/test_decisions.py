"""The analyses that decide: rank fidelity of early epochs, scheduler replay, paired intervals. Each against
synthetic data with a known answer or a hand-worked case."""
import math

import numpy as np
import pandas as pd
import pytest

from results.analysis.fidelity import full_curves, predictive_grace, rank_fidelity
from results.analysis.paired import compare_arms, paired_change, verdict
from results.analysis.replay import milestones, replay, replay_asha, replay_sha


def test_fidelity_recovers_known_correlations():
    """Bivariate normal early/final values with correlation r: Spearman = 6/pi asin(r/2), Kendall = 2/pi asin(r)."""
    rng = np.random.default_rng(0)
    n, rs = 1000, [0.0, 0.5, 0.9]
    final = rng.normal(size=n)
    early = {e: r * final + math.sqrt(1 - r * r) * rng.normal(size=n) for e, r in enumerate(rs, start=1)}
    curves = pd.DataFrame({**early, len(rs) + 1: final}, index=[f"t{i}" for i in range(n)])
    table = rank_fidelity(curves, n_boot=300).set_index("epoch")
    for epoch, r in enumerate(rs, start=1):
        row = table.loc[epoch]
        spearman, kendall = 6 / math.pi * math.asin(r / 2), 2 / math.pi * math.asin(r)
        assert row["spearman"] == pytest.approx(spearman, abs=0.1)  # 3 standard errors at n = 1000
        assert row["kendall"] == pytest.approx(kendall, abs=0.1)
        for name in ("spearman", "kendall"):  # an interval around the estimate, about 4 standard errors wide
            assert row[f"{name}_low"] < row[name] < row[f"{name}_high"]
            assert 0.02 < row[f"{name}_high"] - row[f"{name}_low"] < 0.2
    table = table.reset_index()
    assert predictive_grace(table) == 3  # r = 0.5 gives Spearman 0.48, whose bound cannot reach 0.5; 0.9's does
    assert predictive_grace(table, threshold=0.3) == 2 and predictive_grace(table, threshold=0.95) is None


def test_bootstrap_correlations_equal_scipys_on_each_resample():
    """The vectorised resampled Spearman and Kendall tau-b against scipy, resample by resample, ties included
    (a resample repeats trials, and two trials here tie)."""
    from scipy import stats

    from results.analysis.fidelity import _resampled_correlations

    rng = np.random.default_rng(3)
    for n in (4, 9, 30):
        a = rng.normal(size=n)
        b = a + rng.normal(size=n)
        a[1] = a[0]
        samples = rng.integers(0, n, size=(200, n))
        got = _resampled_correlations(a, b, samples)
        for row, idx in zip(got, samples):
            x, y = a[idx], b[idx]
            if np.ptp(x) == 0 or np.ptp(y) == 0:
                assert np.isnan(row).all()
            else:
                assert row == pytest.approx([stats.spearmanr(x, y).statistic, stats.kendalltau(x, y).statistic],
                                            abs=1e-12)


def test_full_curves_keep_only_trials_with_every_epoch():
    rows = pd.DataFrame({"trial_id": ["a"] * 3 + ["b"] * 2 + ["c"] * 3, "training_iteration": [1, 2, 3, 1, 2, 1, 2, 3],
                         "val_s3_cd": [3, 2, 1, 3, 2, 3, np.nan, 1]})
    assert full_curves(rows, max_t=3).index.tolist() == ["a"]  # b stopped, c has a NaN


# trial: its objective per epoch (lower is better); trial 1 starts worst and ends best
CURVES = np.array([[5.0, 4.0, 3.0, 2.0], [6.0, 5.0, 1.0, 0.5], [4.0, 6.0, 6.0, 6.0]])


def test_asha_replay_by_hand():
    assert milestones(4, 1, 2) == [1, 2, 4]
    # 0 runs to the end recording each rung; 1 is worse than 0 at epoch 1: stopped; 2 passes epoch 1
    # (-4 >= the median of -5 and -6) and is worse than 0 at epoch 2: stopped. 4 + 1 + 2 epochs.
    spent, finished = replay_asha(CURVES, np.array([0, 1, 2]), grace=1, rf=2, concurrency=1)
    assert spent == 7 and finished.tolist() == [True, False, False]
    # started first, 1 sets the bars: 0 beats them (-5 >= -6, -4 >= -5), 2 passes epoch 1 and fails epoch 2
    spent, finished = replay_asha(CURVES, np.array([1, 0, 2]), grace=1, rf=2, concurrency=1)
    assert spent == 10 and finished.tolist() == [True, True, False]
    # two at a time: 1 reports epoch 1 after 0 did, and is stopped; 2 takes its slot at time 2
    spent, finished = replay_asha(CURVES, np.array([0, 1, 2]), grace=1, rf=2, concurrency=2)
    assert spent == 7 and finished.tolist() == [True, False, False]


def test_sha_replay_by_hand():
    # all 3 to epoch 1 (3), the best 2 (trials 2 and 0) to epoch 2 (+2), the best 1 (trial 0) to 4 (+2)
    spent, finished = replay_sha(CURVES, grace=1, rf=2)
    assert spent == 7 and finished.tolist() == [True, False, False]


def test_replay_table_over_every_ordering_by_hand():
    """The 6 orderings of the 3 trials, one at a time (worked out like the cases above): trial-epochs 7, 10, 7, 6,
    10, 9; the winner (1) survives when it starts first; the picked trial's regret is 3, 0, 3, 11, 0, 3."""
    orders = [np.array(o) for o in ([0, 1, 2], [1, 0, 2], [0, 2, 1], [2, 0, 1], [1, 2, 0], [2, 1, 0])]
    spent = [replay_asha(CURVES, order, grace=1, rf=2, concurrency=1)[0] for order in orders]
    assert spent == [7, 10, 7, 6, 10, 9]
    table = replay(pd.DataFrame(CURVES, columns=[1, 2, 3, 4]), graces=[1], factors=[2], concurrency=1,
                   orderings=orders, algorithms=("asha", "sha")).set_index("algorithm")
    asha = table.loc["asha"]
    assert asha["orderings"] == 6 and asha["epochs_share"] == pytest.approx(49 / 6 / 12)
    assert asha["winner_kept"] == pytest.approx(2 / 6) and asha["regret_mean"] == pytest.approx(20 / 6)
    sha = table.loc["sha"]  # synchronous: the ordering does not matter
    assert (sha["epochs_share"], sha["winner_kept"], sha["regret_mean"]) == pytest.approx((7 / 12, 0.0, 3.0))


def test_paired_interval_covers_a_known_effect_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    effect, K, J, hits, reps = -0.05, 8, 30, 0, 300
    for rep in range(reps):
        difficulty = rng.lognormal(0, 0.3, size=J)  # shared by both arms: the same test models
        base = difficulty * rng.lognormal(0, 0.05, size=(K, 1)) * rng.lognormal(0, 0.1, size=(K, J))
        best = (1 + effect) * difficulty * rng.lognormal(0, 0.05, size=(K, 1)) * rng.lognormal(0, 0.1, size=(K, J))
        _, low, high = paired_change(best, base, relative=True, n_boot=1000, seed=rep)
        hits += low <= effect <= high
    assert 0.90 <= hits / reps <= 0.985, hits / reps


def test_verdicts_and_arm_comparison():
    assert verdict(-0.2, -0.1, lower_better=True) == "better" and verdict(0.1, 0.2, lower_better=True) == "worse"
    assert verdict(-0.1, 0.1, lower_better=True) == "inconclusive" and verdict(1, 2, lower_better=False) == "better"
    rows = []
    for arm, scale, seeds in (("best", 0.8, (10, 11)), ("base", 1.0, (0, 1))):
        for k, seed in enumerate(seeds):
            for model in range(6):
                for view in range(2):
                    value = scale * (1 + 0.1 * model) * (1 + 0.01 * k + 0.005 * view)
                    rows.append({"arm": arm, "seed": seed, "synset": "s", "model_id": f"m{model}", "view": view,
                                 **{f"s{s}_{m}": value for s in (1, 2, 3)
                                    for m in ("cd_x1000", "f_tau", "f_2tau", "normal_consistency")}})
    views = pd.DataFrame(rows)
    table = compare_arms(views[views.arm == "best"], views[views.arm == "base"], n_boot=500)
    cd = table[(table.stage == 3) & (table.metric == "cd_x1000")].iloc[0]
    assert cd["change"] == pytest.approx(-0.2) and cd["verdict"] == "better"  # seeds paired by rank: 10<->0
    assert (cd["seeds"], cd["models"]) == (2, 6)
    f = table[(table.stage == 3) & (table.metric == "f_tau")].iloc[0]
    assert f["change"] < 0 and f["verdict"] == "worse"  # a difference in points, and higher is better


def test_validation_reliability_matches_the_classical_formula():
    """Trials with true effects (sd 1) measured on M models with independent model-level noise (sd 2): the
    reliability of the mean over M models is 1 / (1 + 4 / M) (for normal data Spearman is close to it)."""
    from results.analysis.fidelity import validation_reliability

    rng = np.random.default_rng(2)
    T, M = 60, 40
    effect = rng.normal(size=(T, 1))
    values = effect + 2.0 * rng.normal(size=(T, M))
    rows = pd.DataFrame({"trial_id": np.repeat([f"t{i}" for i in range(T)], M), "training_iteration": 3,
                         "synset": "s", "model_id": np.tile([f"m{j}" for j in range(M)], T), "view": 0,
                         "s3_cd": values.ravel()})
    reliability, models, trials = validation_reliability(rows, epoch=3, splits=200)
    assert (models, trials) == (M, T)
    assert reliability == pytest.approx(1 / (1 + 4 / M), abs=0.05)
