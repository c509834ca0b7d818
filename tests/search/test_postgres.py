"""The Optuna study in a real PostgreSQL (``storage.optuna_url``, issue 29): a search whose driver is SIGKILLed and
resumed leaves the study's trials in the states the Parquet trials table gives their trials, none running."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from p2m.names import JOURNAL_FILE
from results.schema import BASELINE, ITERATION, ITERATIONS, STOP_COMPLETED, STOP_EARLY, STOP_ERRORED, STOP_REASON, \
    TRIAL_ID
from results.parquet import read_results, read_trials
from search.optuna_adapter import STUDY_NAME


def _load_services_postgres():
    """tests/services/postgres.py (the tests are no package: ``--import-mode=importlib``)."""
    name = "p2m_tests_services_postgres"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "services" / "postgres.py")
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


postgres_url = _load_services_postgres().postgres_url  # the fixture: a private server, stopped after this module

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.timeout(600)]

# what P2MOptunaSearch tells Optuna of a trial that ended (search/ray_adapter.py); no trial errors in this search
STATE_OF = {STOP_COMPLETED: TrialState.COMPLETE, STOP_EARLY: TrialState.PRUNED, STOP_ERRORED: TrialState.FAIL}
OUTSIDE = "no_laplacian_1"  # a baseline outside the space (0 under a log-uniform range): never told to Optuna


def test_a_study_in_postgresql_survives_a_driver_kill_and_matches_the_trials_table(
        postgres_url, synth_dir, tmp_path, ray_env, search_yaml, kill_search_midway, p2m_run):
    # published and 3 searched trials in the study; ASHA compares them after epoch 1 (max_t 2) and stops some
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "store", search={"num_samples": 5},
                      scheduler={"max_t": 2, "grace_period": 1, "reduction_factor": 2})
    settings = yaml.safe_load(cfg.read_text())
    settings["baselines"] = {"published": {}, OUTSIDE: {"loss.w1_laplacian": 0.0}}  # in place of the default's
    settings["storage"]["optuna_url"] = postgres_url  # write_search_config's `storage` is its positional path
    cfg.write_text(yaml.safe_dump(settings))
    exp = tmp_path / "store" / "t"

    def running_in_study() -> bool:  # the first trials are the two baselines: wait for a searched one to be asked
        try:
            study = optuna.load_study(study_name=STUDY_NAME, storage=postgres_url)
        except KeyError:  # not created yet
            return False
        return any(t.state == TrialState.RUNNING for t in study.trials)

    kill_search_midway(cfg, exp, ray_env, rows=3, until=running_in_study)
    # the killed driver had asked Optuna for trials it never told: the database holds them as running
    before = optuna.load_study(study_name=STUDY_NAME, storage=postgres_url)
    left_running = {t.number for t in before.trials if t.state == TrialState.RUNNING}
    assert left_running, [t.state.name for t in before.trials]

    result = p2m_run("search", "resume", exp, "--quiet", env=ray_env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]

    trials, rows = read_trials(exp), read_results(exp, dedupe=False)
    assert not (exp / JOURNAL_FILE).exists()  # the study was in the database, not in the default journal
    # exit 0 with failure.max_failures 0: no trial errored, so every FAIL in the study is a ghost (below)
    assert len(trials) == 5
    assert set(trials[STOP_REASON]) <= {STOP_COMPLETED, STOP_EARLY}, trials[[TRIAL_ID, STOP_REASON]]
    # every epoch once, in order, as many as the trial ran, and only the table's trials reported
    assert not rows.duplicated([TRIAL_ID, ITERATION]).any()
    assert set(rows[TRIAL_ID]) <= set(trials[TRIAL_ID])
    for trial_id, n in zip(trials[TRIAL_ID], trials[ITERATIONS]):
        assert sorted(rows.loc[rows[TRIAL_ID] == trial_id, ITERATION]) == list(range(1, n + 1)), trial_id

    study = optuna.load_study(study_name=STUDY_NAME, storage=postgres_url)
    assert all(t.state.is_finished() for t in study.trials), [(t.number, t.state.name) for t in study.trials]
    # ghosts: trials the killed driver asked for after Ray's last snapshot of the searcher, which Ray's restored
    # experiment never ran; resume closes them as FAIL (P2MOptunaSearch.reconcile) and says how many. (The
    # restored sampler asks its next point again, so a ghost may share its parameters with a trial that ran.)
    ghosts = [t for t in study.trials if t.state == TrialState.FAIL]
    assert {t.number for t in ghosts} <= left_running, ([t.number for t in ghosts], left_running)
    if ghosts:
        assert f"closed {len(ghosts)} Optuna trial(s) left running by a driver that died" in output, output[-3000:]
    # every other trial of the study is one trial of the table, by its parameters, in the state its stop reason says
    told = []
    for t in study.trials:
        if t.state == TrialState.FAIL:
            continue
        same = pd.Series(True, index=trials.index)
        for key, value in t.params.items():
            same &= trials[f"config.{key}"] == value
        match = trials[same]
        assert len(match) == 1, (t.number, t.state.name, t.params)
        assert t.state == STATE_OF[match[STOP_REASON].iloc[0]], (t.number, match[[TRIAL_ID, STOP_REASON]])
        told.append(match[TRIAL_ID].iloc[0])
    # and each trial of the space is in the study once; the baseline outside the space never is
    outside = trials.loc[trials[BASELINE] == OUTSIDE, TRIAL_ID].tolist()
    assert len(outside) == 1 and outside[0] not in told
    assert sorted(told) == sorted(set(trials[TRIAL_ID]) - set(outside))
