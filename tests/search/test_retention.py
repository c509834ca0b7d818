"""Retention by need (search.retention): which checkpoints an ended trial keeps, on a local disk and in a bucket.

The expected directories are written out by hand for each step, from the rule: errored and unfinished trials keep
all, baselines and the keep_best best ended trials (completed first, by last objective; then stopped early) keep
their last, every other ended trial none."""
from types import SimpleNamespace

import pytest

from results import storage
from search.retention import Retention

CHECKPOINTS = ("checkpoint_000000", "checkpoint_000001", "checkpoint_000002")
PUBLISHED = {"loss.w1_edge": 0.1}


def _trial(trial_id, objective, epochs, status="TERMINATED", config=None):
    return SimpleNamespace(trial_id=trial_id, status=status, config=config or {"loss.w1_edge": 0.5},
                           last_result={"training_iteration": epochs, "val_s3_cd": objective},
                           storage=SimpleNamespace(trial_dir_name=f"train_trial_{trial_id}_00000_0_x"))


def _experiment(base, trials):
    for t in trials:
        for name in CHECKPOINTS:
            storage.write_bytes(storage.join(base, t.storage.trial_dir_name, name, "checkpoint.pt"), b"x")
        storage.write_bytes(storage.join(base, t.storage.trial_dir_name, "progress.csv"), b"epoch\n")


def _left(base, trials) -> dict:
    """trial id -> the checkpoint directories its directory still holds."""
    return {t.trial_id: sorted(n for n in storage.subdirs(storage.join(base, t.storage.trial_dir_name))
                               if n.startswith("checkpoint_")) for t in trials}


@pytest.fixture(params=["local", "s3"])
def experiment(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "exp")
    request.getfixturevalue("s3")
    return f"s3://{request.getfixturevalue('s3_bucket')}/retention-{tmp_path.name}/exp"


def test_ended_trials_keep_what_the_rule_keeps_as_trials_end(experiment):
    a, b, c, d = _trial("a", 1.0, 4), _trial("b", 0.5, 4), _trial("c", 0.2, 2), _trial("d", 0.8, 4)
    published = _trial("p", 2.0, 4, config=dict(PUBLISHED))
    errored, running = _trial("e", 0.1, 3, status="ERROR"), _trial("f", 0.1, 3, status="RUNNING")
    trials = [a, b, c, d, published, errored, running]
    _experiment(experiment, trials)
    retention = Retention(experiment, keep_best=2, max_t=4, baselines={"published": PUBLISHED})
    retention.on_step_begin(0, [])
    all_, last = list(CHECKPOINTS), [CHECKPOINTS[-1]]

    def ended(trial):
        retention.on_trial_complete(0, trials, trial)
        return _left(experiment, trials)

    # a is the best ended trial: kept, its last checkpoint only
    assert ended(a) == {"a": last, "b": all_, "c": all_, "d": all_, "p": all_, "e": all_, "f": all_}
    # c stopped early (epoch 2 of 4): ranked after every completed trial, but 2 are kept
    assert ended(c) == {"a": last, "b": all_, "c": last, "d": all_, "p": all_, "e": all_, "f": all_}
    # b beats a: b, a kept; c drops out and loses its checkpoint
    assert ended(b) == {"a": last, "b": last, "c": [], "d": all_, "p": all_, "e": all_, "f": all_}
    # the baseline is kept whatever its rank
    assert ended(published) == {"a": last, "b": last, "c": [], "d": all_, "p": last, "e": all_, "f": all_}
    # d (0.8) beats a (1.0): a loses its checkpoint; the errored and the running trial keep all of theirs
    assert ended(d) == {"a": [], "b": last, "c": [], "d": last, "p": last, "e": all_, "f": all_}
    retention.on_experiment_end(trials)
    assert _left(experiment, trials) == {"a": [], "b": last, "c": [], "d": last, "p": last, "e": all_, "f": all_}
    # the rest of each trial's directory stays
    assert storage.exists(storage.join(experiment, a.storage.trial_dir_name, "progress.csv"))


def test_a_population_search_deletes_nothing_before_every_trial_ended(experiment):
    a, b, c = _trial("a", 1.0, 4), _trial("b", 0.5, 4), _trial("c", 0.7, 2, status="RUNNING")
    trials = [a, b, c]
    _experiment(experiment, trials)
    retention = Retention(experiment, keep_best=1, max_t=4, until_all_ended=True)
    retention.on_step_begin(0, [])
    retention.on_trial_complete(0, trials, a)
    retention.on_trial_complete(0, trials, b)
    assert _left(experiment, trials) == {t: list(CHECKPOINTS) for t in "abc"}  # c may still clone a's or b's
    # an interrupted run ends with c unfinished (Ray marks it TERMINATED as it stops it): still nothing deleted
    c.status = "TERMINATED"
    retention.on_experiment_end(trials)
    assert _left(experiment, trials) == {t: list(CHECKPOINTS) for t in "abc"}
    # resumed: c was restored as unfinished, and ends now
    c.status = "RUNNING"
    resumed = Retention(experiment, keep_best=1, max_t=4, until_all_ended=True)
    a.status = b.status = "TERMINATED"
    resumed.on_step_begin(0, trials)  # a and b ended before the driver stopped
    resumed.on_trial_complete(0, trials, c)
    assert _left(experiment, trials) == {"a": [], "b": [CHECKPOINTS[-1]], "c": []}


def test_keep_best_zero_keeps_only_baselines(experiment):
    a, published = _trial("a", 0.1, 4), _trial("p", 2.0, 4, config=dict(PUBLISHED))
    trials = [a, published]
    _experiment(experiment, trials)
    retention = Retention(experiment, keep_best=0, max_t=4, baselines={"published": PUBLISHED})
    retention.on_step_begin(0, [])
    for t in trials:
        retention.on_trial_complete(0, trials, t)
    assert _left(experiment, trials) == {"a": [], "p": [CHECKPOINTS[-1]]}
