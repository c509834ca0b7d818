"""Short trial directory names: the trainable, the trial id, and a label that names a baseline or a run."""
import functools
import pickle
from types import SimpleNamespace

from search.runs import run_label
from search.space import baseline_name
from search.trainable import RUN_PARAM
from search.trial_dirs import TrialDirName


def _trial(config, trial_id="0a4ed_00005", trainable="train_trial"):
    return SimpleNamespace(config=config, trial_id=trial_id, trainable_name=trainable)


def test_a_baseline_is_named_and_a_searched_trial_is_its_id():
    baselines = {"published": {"loss.w1_edge": 0.1}, "uniform": {"loss.w1_edge": 1.0}}
    name = TrialDirName(functools.partial(baseline_name, baselines=baselines))
    name = pickle.loads(pickle.dumps(name))  # the Tuner keeps it in the experiment's state
    assert name(_trial({"loss.w1_edge": 0.1, "optim.lr": 1e-4})) == "train_trial_0a4ed_00005_published"
    assert name(_trial({"loss.w1_edge": 0.3})) == "train_trial_0a4ed_00005"
    assert TrialDirName()(_trial({"loss.w1_edge": 0.1})) == "train_trial_0a4ed_00005"


def test_a_label_never_leaves_its_directory():
    name = TrialDirName(lambda config: config["label"])
    assert name(_trial({"label": "../../a b/c"})) == "train_trial_0a4ed_00005_..-..-a-b-c"
    assert "/" not in name(_trial({"label": "/"}))


def test_a_run_is_named_by_its_arm_and_seed():
    name = TrialDirName(run_label)
    config = {RUN_PARAM: {"trial_id": "0a4ed_00003", "seed": 2001, "arm": "best", "phase": "train_best", "round": 0}}
    assert name(_trial(config, "9f1c2_00001", "train_run")) == "train_run_9f1c2_00001_best_seed2001"
