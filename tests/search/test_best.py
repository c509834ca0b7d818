"""Choosing what train-best retrains: the best completed trial, or a named baseline."""
import numpy as np
import pandas as pd
import pytest

from results.trials import pick_baseline, pick_best

TRIALS = pd.DataFrame({
    "trial_id": ["a", "b", "c", "d"],
    "baseline": ["published", None, "uniform", None],
    "stop_reason": ["stopped_early", "completed", "completed", "completed"],
    "last_val_s3_cd": [0.001, 0.020, 0.015, np.nan],
    "iterations": [1, 4, 4, 4],
})


def test_best_is_the_lowest_completed_last_cd():
    assert pick_best(TRIALS)["trial_id"] == "c"  # "a" is lower but was stopped early; "d" has no figure


def test_baseline_by_name_whatever_its_stop_reason():
    assert pick_baseline(TRIALS, "published")["trial_id"] == "a"
    with pytest.raises(ValueError, match=r"no baseline trial named 'seed'.*published, uniform"):
        pick_baseline(TRIALS, "seed")
