"""Weight schedules (PBT, PB2): what they change, how a PB2 trial's log10 weights become weights, and a real PB2
search that is SIGKILLed and resumed, whose trials' weights change mid-trial while training continues."""
import json
import math

import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from p2m.config import load_config
from p2m.names import METRICS_FILE, OBJECTIVE, RUN_CONFIG_FILE, TERMS, TRAIN_BEST_RESULTS_FILE, train_best_dir, weight
from results.schema import ITERATION, STOP_COMPLETED
from results.settings import SearchSettings
from results.parquet import read_results, read_trials
from results.trials import lineage, pick_best
from search.population import LOG10, changing_keys, param_space, trial_params
from search.schedulers import strategy
from search.schedulers.pb2 import BaselinePB2
from search.schedulers.pbt import BaselinePBT

pytestmark = pytest.mark.timeout(900)
SPACE = {"loss.w1_edge": FloatDistribution(3e-3, 3.0, log=True), "optim.lr": FloatDistribution(1e-5, 1e-3),
         "data.gt_samples": CategoricalDistribution((500, 1000))}


def test_population_schedulers_change_the_continuous_keys_pb2_in_log10():
    assert changing_keys(SPACE) == ("loss.w1_edge", "optim.lr")
    pb2_space = param_space(SPACE, "pb2")
    assert set(pb2_space) == {LOG10 + "loss.w1_edge", "optim.lr", "data.gt_samples"}
    assert (pb2_space[LOG10 + "loss.w1_edge"].lower, pb2_space[LOG10 + "loss.w1_edge"].upper) == \
        pytest.approx((math.log10(3e-3), math.log10(3.0)))
    pb2 = strategy("pb2").build(SearchSettings(max_t=6, perturbation_interval=2), SPACE,
                                {"published": {"loss.w1_edge": 0.1}})
    assert isinstance(pb2, BaselinePB2)
    assert pb2._hyperparam_bounds[LOG10 + "loss.w1_edge"] == pytest.approx([math.log10(3e-3), math.log10(3.0)])
    pbt = strategy("pbt").build(SearchSettings(max_t=6, perturbation_interval=2), SPACE, {})
    assert isinstance(pbt, BaselinePBT) and set(pbt._hyperparam_mutations) == {"loss.w1_edge", "optim.lr"}
    # a trial's log10 weight becomes the weight; a baseline's own value wins over a drawn log10
    assert trial_params({LOG10 + "loss.w1_edge": -1.0, "data.gt_samples": 500}) == \
        {"loss.w1_edge": pytest.approx(0.1), "data.gt_samples": 500}
    assert trial_params({LOG10 + "loss.w1_edge": -2.0, "loss.w1_edge": 0.0}) == {"loss.w1_edge": 0.0}
    with pytest.raises(ValueError, match="objectives needs Optuna's sampler"):
        from search.config import search_config_from_dict
        search_config_from_dict({"scheduler": {"type": "pb2"}, "search": {"objectives": ["val_s3_cd", "val_s3_f_tau"]}})


def test_a_population_trial_at_max_t_is_neither_a_donor_nor_sent_back(fake_controller):
    # Ray marks a trial finished only after its last result, so that result reached the quantiles of a trial
    # still counted as live: a cloned trial was given a checkpoint at max_t, with no epoch left to train
    from ray.tune.experiment import Trial

    trials = [Trial("__fake", config={"loss.w1_edge": 0.1, "optim.lr": 1e-4, "data.gt_samples": 500},
                    trial_id=name, stub=True) for name in "abc"]
    a, b, c = trials
    scheduler = strategy("pbt").build(SearchSettings(max_t=3, perturbation_interval=1), SPACE, {})
    scheduler._log_config = False  # no experiment directory here
    controller = fake_controller(trials)
    for trial in trials:
        trial.set_status(Trial.RUNNING)
        scheduler.on_trial_add(controller, trial)
    for trial, score in zip(trials, (1.0, 2.0, 3.0)):
        scheduler.on_trial_result(controller, trial, {ITERATION: 1, OBJECTIVE: score})
    scheduler.on_trial_result(controller, a, {ITERATION: 2, OBJECTIVE: 1.0})
    scheduler.on_trial_result(controller, b, {ITERATION: 2, OBJECTIVE: 2.0})
    scheduler.on_trial_result(controller, a, {ITERATION: 3, OBJECTIVE: 0.5})  # the best, at its last epoch
    scheduler.on_trial_result(controller, b, {ITERATION: 3, OBJECTIVE: 99.0})  # the worst, at its last epoch
    assert controller.paused == [] and ("a", 3) not in controller.saves
    scheduler.on_trial_result(controller, c, {ITERATION: 2, OBJECTIVE: 9.0})  # bottom quarter: clones a
    assert controller.paused == ["c"]
    given = c.run_metadata.checkpoint_manager._latest_checkpoint_result
    assert (given.checkpoint, given.metrics[ITERATION]) == ("a@2", 2)  # one epoch left to train from it


class _FakeTune:
    """The part of ``ray.tune`` a trial uses, without Ray: the checkpoint it is given, and what it reports."""

    Checkpoint = None  # set in the test: ray.tune.Checkpoint (a local directory needs no Ray session)

    def __init__(self, checkpoint=None, trial_id="t"):
        self.checkpoint, self.trial_id, self.reports = checkpoint, trial_id, []

    def get_checkpoint(self):
        return self.checkpoint

    def get_context(self):
        return type("Context", (), {"get_trial_id": lambda _: self.trial_id})()

    def report(self, metrics, checkpoint=None):
        kept = checkpoint.to_directory(str(self.keep / f"epoch{metrics['epoch']}"))
        self.reports.append((metrics, kept))


def test_a_trial_given_another_trials_checkpoint_goes_on_from_it_under_its_own_weights(synth_dir, tmp_path,
                                                                                      monkeypatch):
    """What PBT and PB2 do on exploit, step by step without Ray: trial B starts from trial A's checkpoint with
    another weight (as its log10, PB2's form): it trains epochs 2 and 3 (not epoch 1 again) with A's model and
    optimizer state, and reports its own weights; its checkpoint at max_t is a final one (no optimizer state)."""
    import ray.tune

    from p2m.checkpoint import load_checkpoint
    from p2m.config import apply_overrides, profile_config
    from search import trainable

    monkeypatch.setattr(trainable.ray, "get_runtime_context", lambda: type("C", (), {"get_node_id": lambda _: "n"})())
    base = apply_overrides(profile_config("tiny"), [f"data.root={synth_dir}", "optim.steps_per_epoch=2",
                                                    "data.val_limit=4", "optim.max_epochs=3"]).to_dict()
    first = _FakeTune(trial_id="a")
    first.keep, first.Checkpoint = tmp_path / "a", ray.tune.Checkpoint
    monkeypatch.setattr(trainable, "tune", first)
    trainable.train_trial({"log10:loss.w1_edge": -1.0}, base, changing=("loss.w1_edge",))
    metrics_a, checkpoint_a = first.reports[0]
    assert metrics_a["config.loss.w1_edge"] == pytest.approx(0.1)
    second = _FakeTune(checkpoint=ray.tune.Checkpoint.from_directory(checkpoint_a), trial_id="b")
    second.keep, second.Checkpoint = tmp_path / "b", ray.tune.Checkpoint
    monkeypatch.setattr(trainable, "tune", second)
    trainable.train_trial({"log10:loss.w1_edge": 0.0}, base, changing=("loss.w1_edge",))
    assert [m["epoch"] for m, _ in second.reports] == [2, 3]  # it went on from A's epoch 1
    assert (second.reports[0][0]["parent_trial"], second.reports[0][0]["parent_epoch"]) == ("a", 1)
    assert "parent_trial" not in metrics_a
    assert second.reports[0][0]["config.loss.w1_edge"] == pytest.approx(1.0)
    state_b = load_checkpoint(second.reports[0][1])
    assert state_b["config"]["loss"]["w1_edge"] == pytest.approx(1.0)
    assert all(float(v["step"]) == 4 for v in state_b["optimizer"]["state"].values())  # A's 2 steps, then 2
    assert state_b["history"][0] == load_checkpoint(checkpoint_a)["history"][0]  # A's first epoch is B's past
    final = load_checkpoint(second.reports[1][1])
    assert "optimizer" not in final and final["epoch"] == 3 and [h["epoch"] for h in final["history"]] == [1, 2, 3]
    # without the weight among the keys that may change, continuing A's checkpoint is refused
    third = _FakeTune(checkpoint=ray.tune.Checkpoint.from_directory(checkpoint_a), trial_id="c")
    third.keep, third.Checkpoint = tmp_path / "c", ray.tune.Checkpoint
    monkeypatch.setattr(trainable, "tune", third)
    with pytest.raises(ValueError, match="different config"):
        trainable.train_trial({"log10:loss.w1_edge": 0.0}, base)


@pytest.mark.system  # a driver killed mid-search: the real-cluster stage
def test_pb2_search_changes_weights_mid_trial_and_survives_a_sigkill(synth_dir, tmp_path, ray_env, search_yaml,
                                                                     p2m_run, kill_search_midway):
    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "exp", search={"num_samples": 4, "max_concurrent": 2},
                      baselines={"published": {}}, scheduler={"type": "pb2", "max_t": 3, "perturbation_interval": 1})
    cfg.write_text(cfg.read_text().replace("  uniform:\n    loss.w1_laplacian: 0.5\n", ""))  # published only
    exp = tmp_path / "exp" / "t"
    kill_search_midway(cfg, exp, ray_env, rows=4)
    result = p2m_run("search", "resume", exp, "--quiet", env=ray_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    trials, table = read_trials(exp), read_results(exp)
    assert len(trials) == 4 and (trials["stop_reason"] == STOP_COMPLETED).all(), trials[["trial_id", "stop_reason"]]
    columns = [weight(s, t).column for s in (1, 2, 3) for t in TERMS]
    for trial_id, rows in table.groupby("trial_id"):
        rows = rows.sort_values("training_iteration")
        iteration = rows["training_iteration"]
        assert iteration.is_unique and (rows["epoch"] == iteration).all() and iteration.iloc[-1] == 3, trial_id
        # Ray's asynchronous PBT may give a trial another's checkpoint of a later (or earlier) epoch: the trial's own
        # rows then skip (or retrain) epochs, and the row after the jump names its parent ...
        jumped = iteration.diff().fillna(iteration.iloc[0]) != 1
        assert not jumped.any() or rows.loc[jumped.values, "parent_trial"].notna().all(), trial_id
        # ... and along the model's lineage every epoch came once, in order: never restarted, never repeated
        model = lineage(table, trial_id)
        assert model["training_iteration"].tolist() == model["epoch"].tolist() == [1, 2, 3], trial_id
        moved = (rows[columns].diff().abs() > 0).any(axis=1)
        # whether a trial exploits another depends on the order results arrive (the test above shows the step
        # deterministically); a change comes at an interval, after epoch 1, never to a baseline, and with a
        # parent named on the row
        assert not moved.iloc[:1].any() and (not moved.any() or pd.isna(rows["baseline"].iloc[0])), trial_id
        if moved.any():
            assert rows.loc[moved.values, "parent_trial"].notna().all(), trial_id
    # the trials table holds each trial's weights as they ended, the rows' last
    last = table.sort_values("training_iteration").groupby("trial_id").last()
    for column in columns:
        assert (trials.set_index("trial_id")[column] - last[column]).abs().max() < 1e-9, column
    assert p2m_run("results", "analyze", exp, env=ray_env).returncode == 0
    assert (exp / "analysis" / "weight_schedule.png").stat().st_size > 10_000
    # train-best retrains the best trial with the weights its model trained with, epoch by epoch
    result = p2m_run("search", "train-best", exp, "--seeds", "1", "--previews", "0", "--no-progress", env=ray_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    best = pick_best(trials)["trial_id"]
    schedule = lineage(table, best).sort_values("training_iteration")
    changes = int((schedule[columns].diff().abs() > 0).any(axis=1).sum())
    assert result.stdout.count("to epoch") == changes + 1, result.stdout
    retrained = pd.read_parquet(exp / train_best_dir() / TRAIN_BEST_RESULTS_FILE)
    seed = int(trials["config.seed"].iloc[0]) + 2000  # the first of train-best's seeds: the search's + 2000
    assert retrained["trial_id"].tolist() == [best] and retrained["seed"].tolist() == [seed]
    run_dir = exp / train_best_dir() / f"seed{seed}"
    run = load_config(run_dir / RUN_CONFIG_FILE)
    for column in columns:
        key = column[len("config."):]
        section, field = key.split(".")
        assert abs(getattr(getattr(run, section), field) - schedule[column].iloc[-1]) < 1e-9, column
    epochs = [json.loads(line)["epoch"] for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    assert epochs == [1, 2, 3]  # every epoch once, across the segments
