"""The searcher (Optuna through Ray) and the scheduler (ASHA or FIFO), set up from a search's settings."""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter

from p2m.names import MODE, OBJECTIVE
from results.schema import ITERATION
from search.optuna_adapter import STUDY_NAME, build_sampler
from search.ray_adapter import P2MOptunaSearch
from search.space import baseline_name


class BaselineASHA(ASHAScheduler):
    """ASHA that never stops a baseline: baselines run to ``max_t`` in every search, so every comparison with
    them is at the same epoch. A baseline is a yardstick, not a candidate, so its results do not enter the
    rungs either: the cutoffs are the searched trials' own.

    Args:
        baselines: name -> the baseline's point of the space (how its trial's config is recognised).
    """

    def __init__(self, *args, max_t: int, baselines: dict[str, dict] | None = None, **kwargs):
        super().__init__(*args, max_t=max_t, **kwargs)
        self.max_epochs = max_t
        self.baselines = dict(baselines or {})

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if baseline_name(trial.config, self.baselines) is None:
            return super().on_trial_result(tune_controller, trial, result)
        return TrialScheduler.STOP if result.get(ITERATION, 0) >= self.max_epochs else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if baseline_name(trial.config, self.baselines) is None:
            super().on_trial_complete(tune_controller, trial, result)
        else:
            super().on_trial_remove(tune_controller, trial)  # forget its bracket without recording it


def build_searcher(space: dict, points: list[dict], storage, seed: int, max_t: int, max_concurrent: int,
                   algorithm: str = "tpe", side_points: list[dict] | None = None,
                   objectives: dict[str, str] | None = None):
    """``P2MOptunaSearch`` over ``space`` (Optuna distributions), behind a ConcurrencyLimiter: first the
    ``side_points`` (baselines outside the space, never told to Optuna), then the baseline ``points`` of the
    space, then the sampler's. TPE's first ``len(points) + 2`` (at least 5) trials of the study are random draws.
    ``objectives`` (column -> mode, more than one): a multi-objective study (Optuna's TPE handles several)."""
    metric, mode = OBJECTIVE, MODE
    if objectives and len(objectives) > 1:
        metric, mode = list(objectives), list(objectives.values())
    sampler = build_sampler(algorithm, seed, n_startup_trials=max(len(points) + 2, 5))
    searcher = P2MOptunaSearch(space=space, metric=metric, mode=mode, points_to_evaluate=points or None,
                               sampler=sampler, seed=seed, storage=storage, study_name=STUDY_NAME, max_t=max_t,
                               side_points=side_points)
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)


def build_scheduler(kind: str, max_t: int, grace_period: int, reduction_factor: float,
                    baselines: dict[str, dict] | None = None):
    """ASHA over ``training_iteration`` (epochs) that never stops the ``baselines`` (name -> point), or FIFO
    (no early stopping)."""
    if kind == "asha":
        return BaselineASHA(time_attr=ITERATION, metric=OBJECTIVE, mode=MODE, max_t=max_t, grace_period=grace_period,
                            reduction_factor=reduction_factor, baselines=baselines)
    if kind == "fifo":
        return FIFOScheduler()
    raise ValueError(f"scheduler.type must be 'asha' or 'fifo', got {kind!r}")
