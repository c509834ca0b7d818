"""The Parquet callback: the trials table's figures come from the stored rows, never from the callback's memory."""
import pickle
from types import SimpleNamespace

from results.schema import BEST_ITERATION, BEST_OBJECTIVE, ITERATIONS, LAST_OBJECTIVE, STOP_REASON
from results.parquet import read_trials
from search.callbacks import ParquetResults


def _trial(trial_id, status="RUNNING", config=None):
    return SimpleNamespace(trial_id=trial_id, status=status, config=config or {"loss.w1_edge": 0.2},
                           num_failures=0, get_error=lambda: None)


def _result(it, value):
    return {"training_iteration": it, "val_s3_cd": value, "epoch": it}


def test_a_restored_callback_writes_the_figures_of_rows_it_never_saw(tmp_path):
    """Ray restores the callback from a snapshot after a driver crash; rows written after the snapshot exist
    only on disk, and the trials table must still count them."""
    cb = ParquetResults(tmp_path, "t", max_t=3, base_flat={"loss.w1_edge": 0.1, "seed": 0})
    a = _trial("a")
    cb.on_trial_result(1, [a], a, _result(1, 0.05))
    snapshot = pickle.dumps(cb)  # what Ray would restore
    cb.on_trial_result(2, [a], a, _result(2, 0.02))
    cb.on_trial_result(3, [a], a, _result(3, 0.03))
    restored = pickle.loads(snapshot)
    done = _trial("a", status="TERMINATED")
    never = _trial("b", status="ERROR")  # errored before its first report: a row from its config alone
    restored.on_trial_complete(4, [done, never], done)
    trials = read_trials(tmp_path).set_index("trial_id")
    a_row = trials.loc["a"]
    figures = (a_row[ITERATIONS], a_row[BEST_OBJECTIVE], a_row[BEST_ITERATION], a_row[LAST_OBJECTIVE])
    assert figures == (3, 0.02, 2, 0.03)
    assert a_row[STOP_REASON] == "completed" and a_row["last.epoch"] == 3
    assert a_row["config.loss.w1_edge"] == 0.2 and a_row["config.seed"] == 0
    assert trials.loc["b", STOP_REASON] == "errored" and trials.loc["b", ITERATIONS] == 0


def test_the_trials_table_is_rewritten_at_most_every_interval_and_always_at_the_end(tmp_path):
    cb = ParquetResults(tmp_path, "t", max_t=1, trials_every_s=3600)
    a, b = _trial("a", status="TERMINATED"), _trial("b", status="TERMINATED")
    cb.on_trial_result(1, [a], a, _result(1, 0.05))
    cb.on_trial_complete(1, [a], a)
    cb.on_trial_result(2, [a, b], b, _result(1, 0.04))
    cb.on_trial_complete(2, [a, b], b)  # within the interval: not rewritten
    assert read_trials(tmp_path)["trial_id"].tolist() == ["a"]
    cb.on_experiment_end([a, b])
    assert read_trials(tmp_path)["trial_id"].tolist() == ["a", "b"]


def test_the_trials_table_keeps_the_config_a_trial_last_trained_with():
    """A population scheduler may change a trial's config after its last epoch: the table shows what the trial
    trained with (its last row), and the search's own values, with their types, wherever the two agree."""
    import pandas as pd

    from results.trials import summarise_trials

    rows = pd.DataFrame({"trial_id": ["a", "a"], "training_iteration": [1, 2], "val_s3_cd": [0.2, 0.1],
                         "config.loss.w1_chamfer": [1.0, 10.0], "config.data.gt_samples": [2000.0, 2000.0]})
    meta = pd.DataFrame({"trial_id": ["a", "b"], "status": ["TERMINATED", "ERROR"],
                         "config.loss.w1_chamfer": [0.1, 0.5], "config.data.gt_samples": [2000, 4000]})
    trials = summarise_trials(rows, meta, max_t=2).set_index("trial_id")
    assert trials.loc["a", "config.loss.w1_chamfer"] == 10.0 and trials.loc["b", "config.loss.w1_chamfer"] == 0.5
    assert [type(v) for v in trials["config.data.gt_samples"]] == [int, int]
