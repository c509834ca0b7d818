"""SIGKILL the driver in the middle of a search, resume it, and find every trial finished exactly once."""

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

from results.schema import BEST_OBJECTIVE, LAST_OBJECTIVE, STOP_COMPLETED, STOP_EARLY
from results.store import read_results, read_trials
from p2m.names import JOURNAL_FILE
from search.optuna_adapter import STUDY_NAME

pytestmark = pytest.mark.timeout(900)


def test_sigkill_driver_then_resume(synth_dir, tmp_path, ray_env, search_yaml, p2m_run, kill_search_midway):
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "exp", scheduler={"max_t": 4}, failure={"max_failures": 1},
                      baselines={"learned": {}},  # a trial beside the search, with learned weights, and two points
                      search={"num_samples": 6, "objectives": ["val_s3_cd", "val_s3_normal_consistency"]})
    # (two objectives here; the single-objective search is SIGKILLed and resumed in tests/search/test_cluster.py)
    side = 1  # trials the Optuna study never holds
    exp = tmp_path / "exp" / "t"
    kill_search_midway(cfg, exp, ray_env, rows=5)

    result = p2m_run("search", "resume", exp, "--quiet", env=ray_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "Fatal Python error" not in output, output[-3000:]
    trials = read_trials(exp)
    assert len(trials) == 6
    # every trial that reported keeps its figures, restored ones too (they come from the rows)
    reported = trials[trials["iterations"] > 0]
    assert reported[BEST_OBJECTIVE].notna().all() and reported[LAST_OBJECTIVE].notna().all()
    assert set(trials["stop_reason"]) <= {STOP_COMPLETED, STOP_EARLY}, trials[["trial_id", "stop_reason", "error"]]
    table = read_results(exp)
    raw = read_results(exp, dedupe=False)
    assert len(raw) == len(table)  # compacted: no duplicated (trial, iteration) row left on disk
    for trial_id, n in zip(trials["trial_id"], trials["iterations"]):
        got = sorted(table.loc[table.trial_id == trial_id, "training_iteration"])
        assert got == list(range(1, n + 1)), (trial_id, got)
    study = optuna.load_study(study_name=STUDY_NAME,
                              storage=JournalStorage(JournalFileBackend(str(exp / JOURNAL_FILE))))
    assert all(t.state.is_finished() for t in study.trials)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= len(trials) - side
    assert len(study.directions) == 2 and all(len(t.values) == 2 for t in finished if t.state.name == "COMPLETE")
    # the baseline beside the search ran once, to the end, and logged its learned weights every epoch
    learned = trials[trials["baseline"] == "learned"]
    assert len(learned) == 1 and learned["stop_reason"].tolist() == [STOP_COMPLETED]
    weights = table.loc[table["baseline"] == "learned", "learned_w3_chamfer"]
    assert len(weights) == 4 and weights.notna().all()
