"""The Optuna searcher's two fixes, without a Ray cluster: PRUNED for early stops, storage-first tells."""
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from ray.tune.search.optuna import OptunaSearch

from search import ray_adapter
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
    # every epoch's value, the last at the epoch the trial stopped (the one TPE reads of a pruned trial)
    assert trials[0].intermediate_values == {1: 0.5, 2: 0.4}
    assert trials[1].value == 0.1 and trials[1].intermediate_values == {1: 0.3, 2: 0.15, 3: 0.1}
    assert trials[3].intermediate_values == {1: 0.2}  # the NaN is no value


def test_per_epoch_values_are_written_in_batches_and_each_epoch_once(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(ray_adapter.time, "monotonic", lambda: clock[0])
    s = _searcher(P2MOptunaSearch, tmp_path, max_t=5)
    s.suggest("a"), s.suggest("b")
    s.on_trial_result("a", _result(0.5, 1))
    s.on_trial_result("b", _result(0.6, 1))
    s.on_trial_result("a", _result(0.4, 2))
    reread = _searcher(P2MOptunaSearch, tmp_path, max_t=5)._ot_study  # another reader of the same journal
    assert [t.intermediate_values for t in reread.trials] == [{}, {}]  # not yet: the batch is not due
    clock[0] += ray_adapter.FLUSH_SECONDS
    s.on_trial_result("b", _result(0.55, 2))  # the batch is due: everything kept is written together
    assert [t.intermediate_values for t in _study(s).trials] == [{1: 0.5, 2: 0.4}, {1: 0.6, 2: 0.55}]
    # a trial restored from a checkpoint an epoch behind reports epoch 2 again: the study keeps the first
    s.on_trial_result("a", _result(0.45, 2))
    s.on_trial_result("a", _result(0.3, 3))
    assert s.flush() == 1
    assert _study(s).trials[0].intermediate_values == {1: 0.5, 2: 0.4, 3: 0.3}
    s.on_trial_result("b", _result(0.5, 3))
    s.on_trial_complete("b", _result(0.5, 3))  # ASHA stopped it: its kept value is written before it is told
    b = _study(s).trials[1]
    assert b.state.name == "PRUNED" and b.intermediate_values == {1: 0.6, 2: 0.55, 3: 0.5}


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


def test_side_points_come_first_and_never_reach_the_study(tmp_path):
    """A baseline outside the space (a weight of 0, another form) runs as it is and the study never holds it:
    the sampler's trials, their numbers and its model of the space are those of a search without it."""
    side = [{"loss.w1_edge": 0.0, "loss.normal_form": "vertex"}, {"loss.w1_edge": 100.0}]
    s = _searcher(P2MOptunaSearch, tmp_path, max_t=1, side_points=side,
                  points_to_evaluate=[{"loss.w1_edge": 0.1}])
    assert s.suggest("a") == side[0] and s.suggest("b") == side[1]
    assert s.suggest("c") == {"loss.w1_edge": 0.1}  # then the space's baselines, then the sampler
    s.on_trial_result("a", _result(0.9, 1))
    for tid, value in (("a", 0.9), ("b", 0.05), ("c", 0.5)):
        s.on_trial_complete(tid, _result(value, 1))
    trials = _study(s).trials
    assert [(t.params, t.value) for t in trials] == [({"loss.w1_edge": 0.1}, 0.5)]
    assert s.suggest("d") is not None and s.suggest("d2") is not None
    # the same seeded search without the side points samples the same points
    (tmp_path / "plain").mkdir()
    plain = _searcher(P2MOptunaSearch, tmp_path / "plain", max_t=1, points_to_evaluate=[{"loss.w1_edge": 0.1}])
    plain.suggest("c")
    plain.on_trial_complete("c", _result(0.5, 1))
    assert [plain.suggest("d"), plain.suggest("d2")] == [s._ot_trials[t].params for t in ("d", "d2")]


def test_side_points_still_to_run_survive_a_save_and_restore(tmp_path):
    s = _searcher(P2MOptunaSearch, tmp_path, max_t=1, side_points=[{"loss.w1_edge": 0.0}, {"loss.w1_edge": 50.0}])
    s.suggest("a")
    s.save(str(tmp_path / "searcher.pkl"))
    (tmp_path / "r").mkdir()
    restored = _searcher(P2MOptunaSearch, tmp_path / "r", max_t=1)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggest("b") == {"loss.w1_edge": 50.0}
    restored.on_trial_complete("a", _result(0.3, 1))  # the side trial handed out before the snapshot
    assert _study(restored).trials == []


def test_two_objectives_tell_both_values_and_the_study_front_is_the_told_front(tmp_path):
    """A toy two-objective search driven by hand: full trials are told (cd, normal consistency), early stops
    PRUNED with no values, nothing reported per epoch; Optuna's front is the front of what was told."""
    from results.analysis.pareto import pareto_mask

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    s = P2MOptunaSearch(space=SPACE, metric=["val_s3_cd", "val_s3_normal_consistency"], mode=["min", "max"],
                        storage=storage, study_name="s", seed=0, max_t=2)
    told = {}
    for i in range(12):
        tid = f"t{i}"
        x = s.suggest(tid)["loss.w1_edge"]
        result = {"val_s3_cd": (math.log10(x) + 3) ** 2, "val_s3_normal_consistency": 1 - (math.log10(x) + 1) ** 2,
                  "training_iteration": 1}
        s.on_trial_result(tid, result)
        if i % 4 == 3:
            s.on_trial_complete(tid, result)  # stopped at epoch 1 of 2
        else:
            s.on_trial_complete(tid, {**result, "training_iteration": 2})
            told[i] = (result["val_s3_cd"], result["val_s3_normal_consistency"])
    study = _study(s)
    assert [t.state.name for t in study.trials] == ["PRUNED" if i % 4 == 3 else "COMPLETE" for i in range(12)]
    assert all(t.intermediate_values == {} for t in study.trials)
    assert {t.number: tuple(t.values) for t in study.trials if t.values} == told
    numbers = sorted(told)
    mask = pareto_mask([told[n] for n in numbers], ["min", "max"])
    assert {n for n, keep in zip(numbers, mask) if keep} == {t.number for t in study.best_trials}


def test_a_bucket_experiments_journal_travels_in_the_searchers_pickle(tmp_path, monkeypatch):
    """SnapshotJournalBackend: pickled on one head (the journal's bytes with it), unpickled on another whose cache is
    empty, the study is whole there; a journal already ahead of the snapshot (the same head) is left as it is."""
    import pickle

    from search.optuna_adapter import SnapshotJournalBackend

    uri = "s3://bucket/exp"
    monkeypatch.setenv("P2M_CACHE_DIR", str(tmp_path / "head-a"))
    backend = SnapshotJournalBackend(uri, new=True)
    study = optuna.create_study(storage=JournalStorage(backend), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=3)
    snapshot = pickle.dumps(backend)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)  # after the snapshot
    ahead = SnapshotJournalBackend.local_path(uri).read_bytes()
    pickle.loads(snapshot)
    assert SnapshotJournalBackend.local_path(uri).read_bytes() == ahead

    monkeypatch.setenv("P2M_CACHE_DIR", str(tmp_path / "head-b"))
    restored = pickle.loads(snapshot)
    assert SnapshotJournalBackend.local_path(uri).is_relative_to(tmp_path / "head-b")
    values = [t.params["x"] for t in optuna.load_study(storage=JournalStorage(restored), study_name="s").trials]
    assert values == [t.params["x"] for t in study.trials[:3]]
