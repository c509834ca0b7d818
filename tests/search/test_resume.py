"""SIGKILL the driver in the middle of a search, resume it, and find every trial finished exactly once."""
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

from results.schema import BEST_OBJECTIVE, LAST_OBJECTIVE, STOP_COMPLETED, STOP_EARLY
from results.store import ResultsError, read_results, read_trials
from p2m.names import JOURNAL_FILE
from search.optuna_adapter import STUDY_NAME

pytestmark = pytest.mark.timeout(900)


def test_sigkill_driver_then_resume(synth_dir, tmp_path, ray_env, search_yaml, p2m_run):
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "exp", search={"num_samples": 6},
                      scheduler={"max_t": 4}, failure={"max_failures": 1},
                      baselines={"learned": {}})  # a trial beside the search, with learned weights, and two points
    side = 1  # trials the Optuna study never holds
    exp = tmp_path / "exp" / "t"
    driver = subprocess.Popen([sys.executable, "-m", "p2m.cli", "search", "launch", "--config", str(cfg), "--quiet"],
                              env=ray_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    rows = 0
    while time.time() < deadline and rows < 5 and driver.poll() is None:
        time.sleep(1)
        try:
            rows = len(read_results(exp, dedupe=False))
        except ResultsError:
            rows = 0
    assert driver.poll() is None, "the search finished before it could be killed"
    assert rows >= 5
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    driver.wait()
    time.sleep(2)

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
    # the baseline beside the search ran once, to the end, and logged its learned weights every epoch
    learned = trials[trials["baseline"] == "learned"]
    assert len(learned) == 1 and learned["stop_reason"].tolist() == [STOP_COMPLETED]
    weights = table.loc[table["baseline"] == "learned", "learned_w3_chamfer"]
    assert len(weights) == 4 and weights.notna().all()
