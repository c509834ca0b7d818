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


def test_a_population_trials_schedule_follows_its_lineage():
    """Trial b ran epochs 1-2 at weight 2, then continued a's epoch-2 checkpoint at weight 5: its model
    trained at a's 1.0 for epochs 1-2 (b's own first epochs are not its model's), then at 5.0; the last value
    carries on past the lineage's end, and a shorter budget cuts the schedule."""
    from results.schema import PARENT_EPOCH, PARENT_TRIAL
    from search.best import weight_segments

    key = "loss.w1_chamfer"
    rows = pd.DataFrame({"trial_id": ["a", "a", "a", "b", "b", "b", "b"],
                         "training_iteration": [1, 2, 3, 1, 2, 3, 4],
                         "config." + key: [1.0, 1.0, 1.0, 2.0, 2.0, 5.0, 5.0],
                         "config.loss.w1_edge": [0.1] * 7,
                         PARENT_TRIAL: [None, None, None, None, None, "a", None],
                         PARENT_EPOCH: [np.nan, np.nan, np.nan, np.nan, np.nan, 2, np.nan]})
    assert weight_segments(rows, "b", (key,), 6) == [(2, {key: 1.0}), (6, {key: 5.0})]
    assert weight_segments(rows, "b", (key,), 3) == [(2, {key: 1.0}), (3, {key: 5.0})]
    assert weight_segments(rows, "b", (key,), 1) == [(1, {key: 1.0})]
    assert weight_segments(rows, "a", (key, "loss.w1_edge"), 4) == [(4, {key: 1.0, "loss.w1_edge": 0.1})]
