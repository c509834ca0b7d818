"""The contract every registered scheduler keeps (search.schedulers): a baseline trains to max_t, untouched, and
none of its results enters the scheduler's decisions about the searched trials (its rungs, its quantiles)."""
from __future__ import annotations

import random

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from p2m.names import OBJECTIVE, POPULATION_SCHEDULERS
from results.schema import ITERATION
from results.settings import SearchSettings
from search.population import trial_params
from search.schedulers import REGISTRY, KeepBaselines, strategy

MAX_T = 6
SPACE = {"loss.w1_edge": FloatDistribution(3e-3, 3.0, log=True),
         "data.gt_samples": CategoricalDistribution((500, 1000))}
PUBLISHED = {"loss.w1_edge": 0.1, "data.gt_samples": 500}
SETTINGS = SearchSettings(max_t=MAX_T, grace_period=1, reduction_factor=2, perturbation_interval=1)
# each searched trial's validation CD, epoch after epoch: spread enough that every scheduler stops or exploits some
CURVES = {f"s{i}": [1.0 + i * (0.3 + 0.1 * e) + 0.05 * ((i * 7 + e) % 3) for e in range(MAX_T)] for i in range(6)}


def _run(name: str, baseline_curve: list[float] | None, controller_class) -> dict:
    """Every trial reports its curve, epoch by epoch, to a fresh scheduler ``name`` (seeded alike every run) until
    it is told to stop; returns each trial's decisions and configs, and the saves and pauses asked for."""
    random.seed(0), np.random.seed(0)
    scheduler = strategy(name).build(SETTINGS, SPACE, {"published": PUBLISHED})
    scheduler._log_config = False  # PBT's log of exploits: no experiment directory here
    curves = dict(CURVES)
    configs = {tid: {"loss.w1_edge": 0.2 + 0.1 * i, "data.gt_samples": 1000} for i, tid in enumerate(CURVES)}
    if baseline_curve is not None:
        curves["base"], configs["base"] = baseline_curve, dict(PUBLISHED)
    trials = {tid: Trial("__fake", config=dict(configs[tid]), trial_id=tid, stub=True) for tid in curves}
    controller = controller_class(list(trials.values()))
    for trial in trials.values():  # the baseline last: what PB2 draws for the searched trials here is alike
        trial.set_status(Trial.RUNNING)
        scheduler.on_trial_add(controller, trial)
    random.seed(1), np.random.seed(1)  # ... and what it draws from here on, whatever it drew for the baseline
    decisions = {tid: [] for tid in trials}
    # the baseline first, to its end (trials run asynchronously: a later trial meets every rung after it), then
    # the searched trials, epoch by epoch
    order = [(tid, epoch) for tid in trials if tid == "base" for epoch in range(1, MAX_T + 1)] + \
        [(tid, epoch) for epoch in range(1, MAX_T + 1) for tid in trials if tid != "base"]
    for tid, epoch in order:
        if decisions[tid][-1:] == [TrialScheduler.STOP]:
            continue
        result = {ITERATION: epoch, OBJECTIVE: curves[tid][epoch - 1]}
        decisions[tid].append(scheduler.on_trial_result(controller, trials[tid], result))
        if epoch == MAX_T or decisions[tid][-1] == TrialScheduler.STOP:
            scheduler.on_trial_complete(controller, trials[tid], result)
            trials[tid].set_status(Trial.TERMINATED)
    return {"decisions": decisions, "configs": {tid: dict(t.config) for tid, t in trials.items()},
            "saves": controller.saves, "paused": controller.paused}


def _searched(run: dict) -> dict:
    return {key: ({tid: v for tid, v in value.items() if tid != "base"} if isinstance(value, dict)
                  else [v for v in value if (v[0] if isinstance(v, tuple) else v) != "base"])
            for key, value in run.items()}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_baseline_is_never_stopped_exploited_or_counted(name, fake_controller):
    alone = _run(name, None, fake_controller)
    worst = _run(name, [9.0] * MAX_T, fake_controller)  # the worst each epoch: what a scheduler stops or exploits
    best = _run(name, [0.1] * MAX_T, fake_controller)  # the best each epoch: what would raise a cutoff, or be cloned
    for run in (worst, best):
        assert all(d == TrialScheduler.CONTINUE for d in run["decisions"]["base"][:-1]), run["decisions"]["base"]
        assert len(run["decisions"]["base"]) == MAX_T  # it trained to max_t
        # never exploited: its own values (PB2 adds a drawn log10 beside each, which the trial's own value beats)
        assert trial_params(run["configs"]["base"]) == PUBLISHED and "base" not in run["paused"]
        assert not [s for s in run["saves"] if s[0] == "base"]  # never a donor
        assert _searched(run) == alone  # the searched trials were decided as if it were not there


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_scheduler_acts_on_the_searched_trials(name, fake_controller):
    """The contract above is no empty check: without a baseline each scheduler stops, pauses or changes some
    searched trial (FIFO, which never does, excepted); and each keeps the baselines the one shared way."""
    s = strategy(name)
    scheduler = s.build(SETTINGS, SPACE, {"published": PUBLISHED})
    assert isinstance(scheduler, KeepBaselines)
    alone = _run(name, None, fake_controller)
    acted = any(len(d) < MAX_T for d in alone["decisions"].values()) or alone["paused"]  # stopped early, or exploited
    assert bool(acted) == (name != "fifo"), alone
    assert s.shares_checkpoints == (name in POPULATION_SCHEDULERS)  # the analysis draws their weight schedules
    assert s.checkpoints_to_keep(SETTINGS) >= 2
    assert all(0 < r < MAX_T * 2 for r in s.rungs(scheduler))


def test_an_unknown_scheduler_is_one_line_naming_the_registered():
    with pytest.raises(ValueError, match="scheduler.type must be one of") as error:
        strategy("x")
    assert all(repr(name) in str(error.value) for name in REGISTRY) and str(error.value).endswith("got 'x'")


def test_a_scheduler_pickled_by_an_older_launch_resumes():
    """Ray pickles the scheduler into tuner.pkl at launch; a search launched before search.schedulers held the
    classes names them by their old paths (search.schedulers.BaselineASHA, search.population.BaselinePBT and
    BaselinePB2), and the population schedulers' epochs as max_t."""
    import importlib
    import pickle

    from search.schedulers.pbt import BaselinePBT

    old = {"search.schedulers": "BaselineASHA", "search.population": "BaselinePBT"}
    for module, name in old.items():
        assert getattr(importlib.import_module(module), name).__name__ == name
    scheduler = strategy("pbt").build(SETTINGS, SPACE, {"published": PUBLISHED})
    state = dict(scheduler.__dict__)
    state["max_t"] = state.pop("max_epochs")  # what an older launch pickled
    restored = BaselinePBT.__new__(BaselinePBT)
    restored.__setstate__(state)
    assert restored.max_epochs == MAX_T and pickle.loads(pickle.dumps(restored)).max_epochs == MAX_T
