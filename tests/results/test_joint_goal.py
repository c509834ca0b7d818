"""results.analysis.replay.joint_goal: a goal of several conditions judged on all of them together in each resample
(issue 27), against hand-built draws tables whose answer is known."""
import numpy as np
import pandas as pd
import pytest

from results.analysis.replay import (INCONCLUSIVE, JOINT_SHARE, MET, MET_SHARE, NOT_MET, NOT_MET_SHARE, POINT_MET,
                            RESAMPLES, joint_goal, overall_verdict)

P3 = [("winner_kept", ">=", 0.9), ("epochs_share", "<=", 0.4)]  # the second edition's P3 goal
KEY = ["grace_period", "reduction_factor"]


def _draws(kept: list[bool], cheap: list[bool], setting=(1, 2.0)) -> pd.DataFrame:
    """One setting's resamples: winner_kept 1.0 or 0.0 and epochs_share 0.3 or 0.5, as each flag says."""
    return pd.DataFrame({"grace_period": setting[0], "reduction_factor": setting[1], "resample": range(len(kept)),
                         "winner_kept": np.where(kept, 1.0, 0.0), "epochs_share": np.where(cheap, 0.3, 0.5)})


def _joint(count: int, n: int) -> pd.DataFrame:
    """A setting whose two conditions hold together in ``count`` of ``n`` resamples (each on its own in all)."""
    flags = [True] * count + [False] * (n - count)
    return _draws(flags, [True] * count + [False] * (n - count))


def test_conditions_that_never_hold_together_are_not_met():
    """Each condition holds in half the resamples on its own, never in the same one: joint share 0, NOT met.
    (Half is the most two conditions can each hold without ever holding together: at 60% each, at least 20%
    of the resamples have both.) The second edition's reading, one condition at a time from its own 95%
    interval, could only say inconclusive here: each interval straddles its threshold."""
    kept = [True] * 10 + [False] * 10
    cheap = [False] * 10 + [True] * 10
    draws = _draws(kept, cheap)
    table = joint_goal(draws, P3, KEY)
    row = table.iloc[0]
    assert row["winner_kept >= 0.9"] == 0.5 and row["epochs_share <= 0.4"] == 0.5
    assert row[JOINT_SHARE] == 0.0 and row[RESAMPLES] == 20
    assert row["verdict"] == NOT_MET
    assert overall_verdict(table["verdict"]) == NOT_MET
    kept_low, kept_high = draws["winner_kept"].quantile([0.025, 0.975])
    share_low, share_high = draws["epochs_share"].quantile([0.025, 0.975])
    assert kept_low < 0.9 <= kept_high and share_low <= 0.4 < share_high  # neither met nor NOT met alone


def test_conditions_that_hold_in_60_percent_each_overlap_at_least_a_fifth():
    """60% each, overlapping as little as they can: 20% together, which is inside (0.05, 0.95)."""
    kept = [True] * 6 + [False] * 4
    cheap = [False] * 4 + [True] * 6
    row = joint_goal(_draws(kept, cheap), P3, KEY).iloc[0]
    assert row["winner_kept >= 0.9"] == pytest.approx(0.6) and row["epochs_share <= 0.4"] == pytest.approx(0.6)
    assert row[JOINT_SHARE] == pytest.approx(0.2) and row["verdict"] == INCONCLUSIVE


def test_conditions_that_always_hold_are_met_and_the_point_is_judged_too():
    draws = _draws([True] * 5, [True] * 5)
    point = pd.DataFrame({"grace_period": [1], "reduction_factor": [2.0], "winner_kept": [0.95],
                          "epochs_share": [0.41]})
    table = joint_goal(draws, P3, KEY, point=point)
    assert table.iloc[0][JOINT_SHARE] == 1.0 and table.iloc[0]["verdict"] == MET
    assert not table.iloc[0][POINT_MET]  # 0.41 of the epochs misses <= 0.4 on the un-resampled replay
    point["epochs_share"] = 0.4
    assert joint_goal(draws, P3, KEY, point=point).iloc[0][POINT_MET]


@pytest.mark.parametrize("count, n, expected", [
    (19, 20, MET), (18, 20, INCONCLUSIVE), (95, 100, MET), (94, 100, INCONCLUSIVE),
    (1, 20, NOT_MET), (2, 20, INCONCLUSIVE), (5, 100, NOT_MET), (6, 100, INCONCLUSIVE),
    (20, 20, MET), (0, 20, NOT_MET)])
def test_the_bounds_are_inclusive(count, n, expected):
    """A joint share of exactly 0.95 is met and exactly 0.05 is NOT met; one resample inside either is not."""
    row = joint_goal(_joint(count, n), P3, KEY).iloc[0]
    assert row[JOINT_SHARE] == count / n
    assert row["verdict"] == expected


def test_settings_are_judged_apart_and_in_their_order():
    draws = pd.concat([_joint(20, 20).assign(grace_period=3), _joint(10, 20).assign(grace_period=2),
                       _joint(0, 20).assign(grace_period=1)])
    table = joint_goal(draws, P3, KEY)
    assert table["grace_period"].tolist() == [3, 2, 1]
    assert table["verdict"].tolist() == [MET, INCONCLUSIVE, NOT_MET]
    assert table[JOINT_SHARE].tolist() == [1.0, 0.5, 0.0]


@pytest.mark.parametrize("verdicts, expected", [
    ([NOT_MET, INCONCLUSIVE, MET], MET), ([MET], MET), ([NOT_MET, NOT_MET], NOT_MET), ([NOT_MET], NOT_MET),
    ([NOT_MET, INCONCLUSIVE], INCONCLUSIVE), ([INCONCLUSIVE, INCONCLUSIVE], INCONCLUSIVE)])
def test_over_settings_any_met_is_met_all_not_met_is_not_met(verdicts, expected):
    assert overall_verdict(verdicts) == expected


def test_any_number_of_conditions_nan_does_not_hold():
    draws = pd.DataFrame({"s": ["a"] * 4, "resample": range(4), "x": [1.0, 1.0, 1.0, np.nan],
                          "y": [0.0, 0.0, 5.0, 0.0], "z": [2.0, 2.0, 2.0, 2.0]})
    row = joint_goal(draws, [("x", ">", 0.5), ("y", "<", 1.0), ("z", ">=", 2.0)], ["s"]).iloc[0]
    assert row["x > 0.5"] == 0.75 and row["y < 1"] == 0.75 and row["z >= 2"] == 1.0
    assert row[JOINT_SHARE] == 0.5  # resamples 0 and 1 only: 2 has y 5, 3 has x NaN


def test_empty_inputs_raise():
    with pytest.raises(ValueError, match="draws must hold at least one resample"):
        joint_goal(_draws([], []), P3, KEY)
    with pytest.raises(ValueError, match="conditions must hold at least one"):
        joint_goal(_draws([True], [True]), [], KEY)
    with pytest.raises(ValueError, match="verdicts must hold at least one"):
        overall_verdict([])


def test_bad_inputs_raise():
    draws = _draws([True, False], [True, True])
    with pytest.raises(ValueError, match="comparison must be one of"):
        joint_goal(draws, [("winner_kept", "=>", 0.9)], KEY)
    with pytest.raises(ValueError, match="draws must have the column 'regret'"):
        joint_goal(draws, [("regret", "<=", 0.1)], KEY)
    with pytest.raises(ValueError, match="each condition must be"):
        joint_goal(draws, [("winner_kept", ">=")], KEY)
    with pytest.raises(ValueError, match="conditions must differ"):
        joint_goal(draws, [P3[0], P3[0]], KEY)
    with pytest.raises(ValueError, match=r"draws must have the columns .* missing \['resample'\]"):
        joint_goal(draws.drop(columns="resample"), P3, KEY)
    with pytest.raises(ValueError, match="one row per resample and setting, got 2 repeated"):
        joint_goal(pd.concat([draws, draws]), P3, KEY)
    with pytest.raises(ValueError, match="point must have one row per setting"):
        joint_goal(draws, P3, KEY, point=draws.assign(grace_period=9))
    with pytest.raises(ValueError, match="verdicts must be"):
        overall_verdict(["met", "passed"])
