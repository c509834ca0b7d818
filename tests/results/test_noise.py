"""The noise floor (:mod:`results.analysis.noise`): the pooled seed standard deviation and the paired comparison's
resolution, against hand-computed values and scipy's normal quantiles."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from results.analysis.noise import POWER, resolvable_change, seed_sd, seeds_needed


def test_seed_sd_pools_within_groups():
    # [1, 2, 3]: squares 2, dof 2; [5, 7]: squares 2, dof 1; [9]: one run, left out -> 4 / 3 over 3 dof
    runs = pd.DataFrame({"candidate": ["a"] * 3 + ["b"] * 2 + ["c"], "value": [1, 2, 3, 5, 7, 9.0]})
    sd, dof = seed_sd(runs)
    assert dof == 3 and sd == pytest.approx(math.sqrt(4 / 3))
    trial = runs.rename(columns={"candidate": "trial", "value": "cd"})
    assert seed_sd(trial, group="trial", value="cd") == (sd, dof)


def test_seed_sd_is_unmoved_by_differences_between_groups():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, size=(4, 5))
    far_apart = pd.DataFrame({"candidate": np.repeat(list("abcd"), 5),
                              "value": (noise + np.array([[0], [100], [-50], [7]])).ravel()})
    together = far_apart.assign(value=noise.ravel())
    assert seed_sd(far_apart) == pytest.approx(seed_sd(together))
    assert seed_sd(far_apart)[0] == pytest.approx(math.sqrt(np.var(noise, axis=1, ddof=1).mean()))


def test_seed_sd_without_a_repeated_configuration():
    sd, dof = seed_sd(pd.DataFrame({"candidate": ["a", "b"], "value": [1.0, 2.0]}))
    assert math.isnan(sd) and dof == 0
    sd, dof = seed_sd(pd.DataFrame({"candidate": [], "value": []}))
    assert math.isnan(sd) and dof == 0


def test_seed_sd_rejects_bad_tables():
    with pytest.raises(ValueError, match="missing \\['value'\\]"):
        seed_sd(pd.DataFrame({"candidate": ["a"]}))
    with pytest.raises(ValueError, match="must be finite, got 1 non-finite"):
        seed_sd(pd.DataFrame({"candidate": ["a", "a"], "value": [1.0, np.nan]}))


def test_resolvable_change_against_normal_quantiles():
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)  # 1.95996 + 0.84162 = 2.80159
    assert resolvable_change(0.5, 4) == pytest.approx(z * 0.5 / 2)
    assert resolvable_change(1.0, 1) == pytest.approx(2.8016, abs=1e-4)
    z = stats.norm.ppf(1 - 0.01 / 2) + stats.norm.ppf(0.9)
    assert resolvable_change(2.0, 9, alpha=0.01, power=0.9) == pytest.approx(z * 2 / 3)
    assert resolvable_change(0.0, 5) == 0.0 and math.isnan(resolvable_change(math.nan, 5))
    assert POWER == 0.8


def test_seeds_needed_against_hand_computed_values():
    # (2.80159 * 1 / 1)^2 = 7.849 -> 8; (2.80159 * 0.3 / 0.1)^2 = 70.64 -> 71
    assert seeds_needed(1.0, 1.0) == 8
    assert seeds_needed(-0.1, 0.3) == 71  # the sign of the change does not matter
    assert seeds_needed(5.0, 0.1) == 2  # at least two seeds
    assert seeds_needed(0.0, 0.3) == math.inf and seeds_needed(math.nan, 0.3) == math.inf
    assert seeds_needed(math.inf, 0.3) == math.inf and math.isnan(seeds_needed(0.1, math.nan))
    # the two agree: n seeds resolve a change, and that change needs at most n seeds
    for n in (2, 5, 13, 40):
        assert seeds_needed(resolvable_change(0.3, n) * (1 + 1e-9), 0.3) <= n


def test_bad_test_settings_raise():
    with pytest.raises(ValueError, match="alpha must lie in"):
        resolvable_change(1.0, 3, alpha=1.5)
    with pytest.raises(ValueError, match="power must lie in"):
        seeds_needed(1.0, 1.0, power=80)
    with pytest.raises(ValueError, match="n must be at least 1 seed"):
        resolvable_change(1.0, 0)
    with pytest.raises(ValueError, match="sd_diff must be non-negative"):
        resolvable_change(-1.0, 3)
    with pytest.raises(ValueError, match="sd_diff must be non-negative"):
        seeds_needed(1.0, -1.0)
