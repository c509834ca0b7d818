"""Multiplicity and equivalence in the paired verdict (:mod:`results.analysis.paired`): the bootstrap p-value beside
the interval, Holm's step-down adjustment against hand-worked cases, and a family's verdicts."""
import numpy as np
import pandas as pd
import pytest

from results.analysis.paired import (ALPHA, CONFIDENCE, EQUIVALENCE_MARGINS, bootstrap_change, bootstrap_p, compare_arms,
                            decide_family, holm, paired_change, percentile_interval)


def test_holm_matches_a_hand_worked_case():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_ties_a_single_p_a_cap_at_one_and_nan():
    np.testing.assert_allclose(holm([0.02, 0.02]), [0.04, 0.04])  # 0.02 * 2, then max(0.02 * 1, 0.04)
    np.testing.assert_allclose(holm([0.02, 0.01, 0.02]), [0.04, 0.03, 0.04])
    np.testing.assert_allclose(holm([0.03]), [0.03])
    np.testing.assert_allclose(holm([0.5, 0.4]), [0.8, 0.8])
    np.testing.assert_allclose(holm([0.6, 0.9]), [1.0, 1.0])  # 0.6 * 2 capped
    np.testing.assert_allclose(holm([0.01, np.nan, 0.02]), [0.02, np.nan, 0.02])  # m = 2: NaN does not count
    assert holm([]).shape == (0,)


def test_holm_rejects_bad_p_values():
    with pytest.raises(ValueError, match="p_values must lie in"):
        holm([0.1, 1.5])
    with pytest.raises(ValueError, match="p_values must be one-dimensional"):
        holm([[0.1, 0.2]])


def test_bootstrap_p_is_twice_the_smaller_tail():
    assert bootstrap_p(np.array([-1.0, -2.0, 1.0, -3.0])) == pytest.approx(0.5)  # 2 * min(3/4, 1/4)
    assert bootstrap_p(np.array([-1.0, 0.0, 1.0, 2.0])) == pytest.approx(1.0)  # 2 * min(2/4, 3/4)
    assert bootstrap_p(np.array([1.0, 2.0, 3.0])) == 0.0
    assert bootstrap_p(np.zeros(5)) == 1.0


def test_paired_change_is_the_interval_of_the_same_draws_and_its_level_widens_it():
    rng = np.random.default_rng(0)
    base = rng.lognormal(0, 0.2, size=(5, 20))
    best = 0.97 * base * rng.lognormal(0, 0.05, size=(5, 20))
    point, boot = bootstrap_change(best, base, relative=True, n_boot=800, seed=3)
    assert boot.shape == (800,)
    assert paired_change(best, base, relative=True, n_boot=800, seed=3) == (point, *percentile_interval(boot))
    _, low95, high95 = paired_change(best, base, relative=True, n_boot=800, seed=3)
    _, low, high = paired_change(best, base, relative=True, n_boot=800, seed=3, confidence=1 - 0.05 / 6)
    assert low < low95 < point < high95 < high
    with pytest.raises(ValueError, match="confidence must lie in"):
        paired_change(best, base, relative=True, confidence=95)


def test_compare_arms_gives_p_at_the_callers_level():
    rng = np.random.default_rng(1)
    rows = []
    for arm, scale in (("best", 0.9), ("base", 1.0)):
        for seed in range(3):
            for model in range(8):
                value = scale * (1 + 0.1 * model) * (1 + 0.02 * seed) * rng.lognormal(0, 0.01)
                rows.append({"arm": arm, "seed": seed, "synset": "s", "model_id": f"m{model}", "view": 0,
                             **{f"s{s}_{m}": value for s in (1, 2, 3)
                                for m in ("cd_x1000", "f_tau", "f_2tau", "normal_consistency")}})
    views = pd.DataFrame(rows)
    a, b = views[views.arm == "best"], views[views.arm == "base"]
    wide = compare_arms(a, b, n_boot=400, confidence=1 - ALPHA / 12)
    narrow = compare_arms(a, b, n_boot=400)
    assert list(wide.columns) == ["stage", "metric", "best", "baseline", "change", "low", "high", "p", "relative",
                                  "verdict", "seeds", "models"]
    assert ((wide["high"] - wide["low"]) >= (narrow["high"] - narrow["low"])).all()
    np.testing.assert_array_equal(wide["p"], narrow["p"])  # p does not depend on the interval's level
    cd = wide[(wide.stage == 3) & (wide.metric == "cd_x1000")].iloc[0]
    assert cd["p"] == 0.0 and cd["verdict"] == "better"  # every resample is a 10% drop, give or take 1%
    assert CONFIDENCE == 0.95


def _family(rows):
    return pd.DataFrame(rows, columns=["metric", "change", "low", "high", "p"])


def test_a_tiny_change_with_a_tight_interval_is_equivalent_and_with_a_wide_one_inconclusive():
    margin = EQUIVALENCE_MARGINS["cd_x1000"]
    table = decide_family(_family([("cd_x1000", 0.002, -0.005, 0.009, 0.6),
                                   ("cd_x1000", 0.002, -0.04, 0.045, 0.9)]))
    assert margin == 0.02
    assert list(table["verdict"]) == ["equivalent", "inconclusive"]
    np.testing.assert_allclose(table["p_holm"], [1.0, 1.0])
    # a metric without a margin is never equivalent, however tight its interval; a margin can be given
    table = decide_family(_family([("f_tau", 0.001, -0.002, 0.003, 0.5)]))
    assert table["verdict"].iloc[0] == "inconclusive"
    table = decide_family(_family([("f_tau", 0.001, -0.002, 0.003, 0.5)]), margins={"f_tau": 0.5})
    assert table["verdict"].iloc[0] == "equivalent"


def test_clear_changes_take_their_direction_from_the_metric():
    table = decide_family(_family([("cd_x1000", -0.10, -0.14, -0.06, 0.0),  # lower CD: better
                                   ("cd_x1000", 0.10, 0.06, 0.14, 0.0),  # higher CD: worse
                                   ("f_tau", 3.0, 1.0, 5.0, 0.001),  # more F-score points: better
                                   ("normal_consistency", -0.05, -0.08, -0.02, 0.002)]))  # fewer: worse
    assert list(table["verdict"]) == ["better", "worse", "better", "worse"]
    np.testing.assert_allclose(table["p_holm"], [0.0, 0.0, 0.002, 0.002])  # 0.001 * 2; max(0.002 * 1, 0.002)


def test_holm_decides_where_the_unadjusted_rule_would_not():
    """Three comparisons whose unadjusted p are all under 0.05: Holm keeps only the smallest (0.01 * 3 = 0.03),
    then stops (0.03 * 2 = 0.06), so the other two are not called better however their p alone reads."""
    table = decide_family(_family([("cd_x1000", -0.05, -0.09, -0.01, 0.01),
                                   ("f_tau", 2.0, -0.5, 4.5, 0.03),
                                   ("f_2tau", 1.0, -0.2, 2.2, 0.04)]))
    assert (table["p"] < ALPHA).all()
    np.testing.assert_allclose(table["p_holm"], [0.03, 0.06, 0.06])
    assert list(table["verdict"]) == ["better", "inconclusive", "inconclusive"]
    alone = decide_family(table.iloc[[1]])  # the same comparison as a family of one is significant
    assert alone["verdict"].iloc[0] == "better"


def test_decide_family_keeps_nan_inconclusive_and_rejects_bad_tables():
    table = decide_family(_family([("cd_x1000", np.nan, np.nan, np.nan, np.nan),
                                   ("cd_x1000", -0.1, -0.2, -0.05, 0.01)]))
    assert list(table["verdict"]) == ["inconclusive", "better"] and table["p_holm"].iloc[1] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="missing \\['p'\\]"):
        decide_family(_family([("cd_x1000", 0.0, -0.1, 0.1, 1.0)]).drop(columns="p"))
    with pytest.raises(ValueError, match="metrics must be among"):
        decide_family(_family([("psnr", 0.0, -0.1, 0.1, 1.0)]))
    with pytest.raises(ValueError, match="alpha must lie in"):
        decide_family(_family([("cd_x1000", 0.0, -0.1, 0.1, 1.0)]), alpha=5)


def test_bootstrap_p_of_a_change_that_is_not_finite_is_nan():
    """An arm without rows gives NaN changes: no p-value, so Holm leaves it out and no verdict is drawn from it."""
    from results.analysis.paired import bootstrap_p

    assert np.isnan(bootstrap_p(np.array([0.1, np.nan, -0.2])))
    assert np.isnan(bootstrap_p(np.array([])))
    assert bootstrap_p(np.array([0.1, 0.2, -0.1, 0.3])) == 0.5
