"""ASHA's rungs as the analysis records them: the scheduler's own milestones, met at the epoch Ray decides."""
import logging
from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from results.settings import SearchSettings
from search.ray_adapter import asha_milestones
from search.schedulers import strategy


def test_recorded_rungs_are_the_milestones_ray_decides_at():
    sched = strategy("asha").build(SearchSettings(max_t=8, grace_period=1, reduction_factor=2.5), {}, {})
    rungs = asha_milestones(sched)
    assert rungs == (1.0, 2.5, 6.25)
    assert SearchSettings(max_t=8, reduction_factor=2.5, rungs=rungs).rung_epochs() == [1, 3, 7]
    # Ray's own decision: b beats a at epoch 1, then falls behind; ASHA first compares them again at epoch 3
    a, b = SimpleNamespace(trial_id="a", config={}), SimpleNamespace(trial_id="b", config={})
    for trial in (a, b):
        sched.on_trial_add(None, trial)
    decisions = {}
    for epoch in (1, 2, 3):
        sched.on_trial_result(None, a, {"training_iteration": epoch, "val_s3_cd": 1.0})
        decisions[epoch] = sched.on_trial_result(None, b, {"training_iteration": epoch,
                                                           "val_s3_cd": 0.5 if epoch == 1 else 2.0})
    assert decisions == {1: TrialScheduler.CONTINUE, 2: TrialScheduler.CONTINUE, 3: TrialScheduler.STOP}


def test_fifo_has_no_rungs():
    assert SearchSettings(scheduler="fifo", max_t=4).rung_epochs() == []


def test_a_checkpoint_already_deleted_is_one_line_not_a_traceback(tmp_path, caplog):
    """Ray's checkpoint manager raises FileNotFoundError when it deletes a checkpoint that is already gone (what a
    driver killed between deleting it and snapshotting leaves for the resume); the controller logs that with a
    traceback, which the filter turns into one line. Any other error keeps its traceback."""

    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    from search.ray_adapter import CONTROLLER_LOGGER, GoneCheckpointFilter

    manager = _CheckpointManager(CheckpointConfig(num_to_keep=1))
    first, second = tmp_path / "checkpoint_000000", tmp_path / "checkpoint_000001"
    for path in (first, second):
        path.mkdir()
    manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(first)), {}))
    first.rmdir()  # deleted by the driver that was then killed
    logger = logging.getLogger(CONTROLLER_LOGGER)
    logger.addFilter(GoneCheckpointFilter())
    try:
        with caplog.at_level(logging.WARNING, logger=CONTROLLER_LOGGER):
            try:
                manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(second)), {}))
            except FileNotFoundError:  # Ray's behaviour; the controller logs it as below
                logger.exception("Trial %s: Error handling checkpoint %s", "train_trial_1", "ckpt")
            try:
                raise PermissionError("read-only storage")
            except PermissionError:
                logger.exception("Trial %s: Error handling checkpoint %s", "train_trial_2", "ckpt")
    finally:
        logger.filters = [f for f in logger.filters if not isinstance(f, GoneCheckpointFilter)]
    gone, other = caplog.records
    assert gone.exc_info is None and "already deleted" in gone.getMessage() and "train_trial_1" in gone.getMessage()
    assert other.exc_info is not None and "Error handling checkpoint" in other.getMessage()


def test_a_resumed_trial_whose_latest_checkpoint_is_gone_restarts_from_its_first_epoch(tmp_path, caplog):
    """The snapshot lists checkpoint_000001 for a running trial, but the killed driver had deleted it: the trial
    loses its checkpoints (it restarts); one whose checkpoint exists and a finished one are left alone."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.session import _TrainingResult
    from ray.tune.experiment.trial import Trial

    from search.ray_adapter import LostCheckpoints

    def trial(name, status, *indices):
        t = Trial("train_trial", config={}, trial_id=name, stub=True, checkpoint_config=CheckpointConfig(num_to_keep=2))
        t.status = status
        for i in indices:
            path = tmp_path / name / f"checkpoint_{i:06d}"
            path.mkdir(parents=True)
            t.run_metadata.checkpoint_manager.register_checkpoint(
                _TrainingResult(Checkpoint.from_directory(str(path)), {"training_iteration": i + 1}))
        return t

    lost, kept, done = trial("lost", Trial.PENDING, 0, 1), trial("kept", Trial.PAUSED, 0, 1), \
        trial("done", Trial.TERMINATED, 0)
    (tmp_path / "lost" / "checkpoint_000001").rmdir()
    (tmp_path / "done" / "checkpoint_000000").rmdir()
    callback = LostCheckpoints()
    with caplog.at_level(logging.WARNING, logger="search.ray_adapter"):
        callback.on_step_begin(0, [lost, kept, done])
    assert lost.latest_checkpoint_result is None
    assert lost.run_metadata.checkpoint_manager.checkpoint_config.num_to_keep == 2
    assert kept.latest_checkpoint_result.checkpoint.path == str(tmp_path / "kept" / "checkpoint_000001")
    assert done.latest_checkpoint_result is not None  # finished: never restored, nothing to change
    [record] = caplog.records
    assert "lost" in record.getMessage() and "restarts from its first epoch" in record.getMessage()
    # checked once, at the first step: a checkpoint deleted later (Ray's own num_to_keep) is no concern of it
    (tmp_path / "kept" / "checkpoint_000001").rmdir()
    callback.on_step_begin(1, [lost, kept, done])
    assert kept.latest_checkpoint_result is not None


def test_asha_never_stops_a_baseline_and_keeps_it_out_of_the_rungs():
    published = {"loss.w1_edge": 0.1}
    sched = strategy("asha").build(SearchSettings(max_t=4, grace_period=1, reduction_factor=2), {},
                                   {"published": published})
    good, bad = SimpleNamespace(trial_id="good", config={"loss.w1_edge": 0.3}), \
        SimpleNamespace(trial_id="bad", config={"loss.w1_edge": 0.9})
    base = SimpleNamespace(trial_id="base", config=dict(published))
    for trial in (good, base, bad):
        sched.on_trial_add(None, trial)
    decisions = {"good": [], "base": [], "bad": []}
    for epoch in (1, 2, 3, 4):
        for trial, value in ((good, 1.0), (base, 9.0), (bad, 5.0)):  # the baseline is the worst throughout
            if decisions[trial.trial_id][-1:] != [TrialScheduler.STOP]:
                decisions[trial.trial_id].append(
                    sched.on_trial_result(None, trial, {"training_iteration": epoch, "val_s3_cd": value}))
    assert decisions["base"] == [TrialScheduler.CONTINUE] * 3 + [TrialScheduler.STOP]  # stopped only at max_t
    # the searched trial worse than "good" is cut at the first rung: the baseline's 9.0 did not lower the bar
    assert decisions["bad"] == [TrialScheduler.STOP]
    sched.on_trial_complete(None, base, {"training_iteration": 4, "val_s3_cd": 9.0})  # forgotten, not recorded
