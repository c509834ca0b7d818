"""The Optuna searcher's two fixes, without a Ray cluster: PRUNED for early stops, storage-first tells."""
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from ray.tune.search.optuna import OptunaSearch

from search.ray_adapter import P2MOptunaSearch

SPACE = {"loss.w1_edge": FloatDistribution(1e-3, 1.0, log=True)}


def _searcher(cls, tmp_path, **kwargs):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    return cls(space=SPACE, metric="val_s3_cd", mode="min", storage=storage, study_name="s", seed=0, **kwargs)


def _study(searcher) -> optuna.Study:
    return searcher._ot_study  # Ray's OptunaSearch keeps its study here (search.ray_adapter lists it)


def _result(value, it):
    return {"val_s3_cd": value, "training_iteration": it}


def test_early_stopped_trials_are_pruned_and_only_full_ones_complete(tmp_path):
    s = _searcher(P2MOptunaSearch, tmp_path, max_t=3)
    for tid in "abcd":
        s.suggest(tid)
    s.on_trial_result("a", _result(0.5, 1))
    s.on_trial_complete("a", _result(0.4, 2))  # ASHA stopped it at iteration 2 of 3
    for it in (1, 2):
        s.on_trial_result("b", _result(0.3 / it, it))
    s.on_trial_complete("b", _result(0.1, 3))  # reached max_t
    s.on_trial_complete("c", None, error=True)
    s.on_trial_result("d", _result(0.2, 1))
    s.on_trial_complete("d", _result(math.nan, 2))  # a NaN objective is a failure, not a score
    trials = {t.number: t for t in _study(s).trials}
    assert [trials[i].state.name for i in range(4)] == ["PRUNED", "COMPLETE", "FAIL", "FAIL"]
    assert trials[0].intermediate_values == {1: 0.5, 2: 0.4}
    assert trials[1].value == 0.1 and trials[1].intermediate_values == {1: 0.3, 2: 0.15, 3: 0.1}


def test_ray_s_own_searcher_calls_an_asha_stop_complete(tmp_path):
    """The pitfall the subclass exists for (if Ray fixes it, this test says so)."""
    s = _searcher(OptunaSearch, tmp_path)
    s.suggest("a")
    s.on_trial_result("a", _result(0.5, 1))
    s.on_trial_complete("a", _result(0.4, 2))
    assert _study(s).trials[0].state.name == "COMPLETE"


def test_trials_the_journal_already_finished_are_not_told_again(tmp_path):
    s = _searcher(P2MOptunaSearch, tmp_path, max_t=3)
    s.suggest("a")
    s.on_trial_result("a", _result(0.5, 1))
    # the journal moves ahead of this (restored, older) searcher: another process finished the trial
    other = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "journal.log"))))
    other.tell(other.trials[0].number, 0.42)
    s.on_trial_result("a", _result(0.45, 2))
    s.on_trial_complete("a", _result(0.4, 3))
    assert _study(s).trials[0].value == 0.42

    (tmp_path / "plain").mkdir()
    plain = _searcher(OptunaSearch, tmp_path / "plain")
    plain.suggest("a")
    other = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "plain" / "journal.log"))))
    other.tell(other.trials[0].number, 0.42)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        plain.on_trial_result("a", _result(0.45, 2))  # what kills a resumed search without the fix


def test_reconcile_closes_trials_left_running_by_a_dead_driver(tmp_path):
    s = _searcher(P2MOptunaSearch, tmp_path, max_t=3)
    s.suggest("a")
    ghost = _study(s).ask()  # asked after the searcher's last snapshot: the restored searcher never knew it
    assert ghost.number == 1
    assert s.reconcile() == 1
    states = [t.state.name for t in _study(s).trials]
    assert states == ["RUNNING", "FAIL"]  # "a" is still the searcher's own, running trial
