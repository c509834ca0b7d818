"""The searcher (Optuna through Ray) and the scheduler (ASHA or FIFO), set up from a search's settings, and ASHA's
rungs rebuilt from the results rows on resume."""
from __future__ import annotations

from typing import NamedTuple

import pandas as pd
from ray.tune.schedulers import ASHAScheduler, AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter

from p2m.names import ASHA, FIFO, MODE, OBJECTIVE, RESULTS_DIR, TPE
from results import storage
from results.schema import BASELINE, ITERATION, KEY, TRIAL_ID
from results.store import list_parts, read_results
from search.optuna_adapter import STUDY_NAME, build_sampler
from search.ray_adapter import P2MOptunaSearch, asha_milestones, forget_trial, record_rungs, tuner_scheduler
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
            forget_trial(self, tune_controller, trial)


def build_searcher(space: dict, points: list[dict], storage, seed: int, max_t: int, max_concurrent: int,
                   algorithm: str = TPE, side_points: list[dict] | None = None,
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
    if kind == ASHA:
        return BaselineASHA(time_attr=ITERATION, metric=OBJECTIVE, mode=MODE, max_t=max_t, grace_period=grace_period,
                            reduction_factor=reduction_factor, baselines=baselines)
    if kind == FIFO:
        return FIFOScheduler()
    raise ValueError(f"scheduler.type must be 'asha' or 'fifo', got {kind!r}")


class RebuiltRungs(NamedTuple):
    """What :func:`rebuild_rungs` put back: ``values`` recorded from ``results`` rows of ``trials`` searched trials."""
    results: int
    trials: int
    values: int
    milestones: tuple[float, ...]

    def __str__(self) -> str:
        return (f"ASHA: rungs rebuilt from {self.results} results of {self.trials} trials "
                f"(milestones {', '.join(f'{m:g}' for m in self.milestones)})")


def restore_rungs(tuner, exp: storage.Location, milestones: tuple[float, ...]) -> RebuiltRungs:
    """ASHA's rungs of a restored ``tuner`` rebuilt from the experiment ``exp``'s results rows.

    Ray restores the scheduler as it was pickled at launch (ray-project/ray#30838), its rungs empty: without this,
    trials after a resume would be compared only with each other. ``milestones``: those recorded at launch (the
    settings' ``rungs``)."""
    root = storage.join(exp, RESULTS_DIR)
    rows = read_results(exp) if list_parts(root) else pd.DataFrame(columns=[*KEY, OBJECTIVE, BASELINE])
    return rebuild_rungs(tuner_scheduler(tuner), rows, milestones)


def rebuild_rungs(scheduler: AsyncHyperBandScheduler, rows: pd.DataFrame,
                  milestones: tuple[float, ...] = ()) -> RebuiltRungs:
    """Record in ASHA's rungs every searched trial's objective at each milestone, as ASHA recorded it when the trial
    reported (at the first epoch >= the milestone): a resumed search then stops the trials an uninterrupted one
    would. Baselines' rows are left out (:class:`BaselineASHA` never records them); a (trial, epoch) given twice
    counts once, its last row.

    Args:
        scheduler: the restored ASHA (one bracket).
        rows: the results rows (``results.store.read_results``): ``TRIAL_ID``, ``ITERATION``, ``OBJECTIVE`` and
            ``BASELINE`` (None for a searched trial; without the column every row is a searched trial's).
        milestones: the milestones recorded at launch; () skips the check.

    Raises:
        ValueError: when ``milestones`` differ from the scheduler's, or a column is missing.
    """
    have = asha_milestones(scheduler)
    if milestones and tuple(float(m) for m in milestones) != have:
        raise ValueError(f"milestones must be the restored scheduler's {list(have)}, got {list(milestones)} "
                         "(the settings' rungs recorded at launch)")
    missing = [c for c in (*KEY, OBJECTIVE) if c not in rows.columns]
    if missing:
        raise ValueError(f"rows must have the columns {[*KEY, OBJECTIVE]}, missing {missing}")
    searched = rows[rows[BASELINE].isna()] if BASELINE in rows.columns else rows
    searched = searched.drop_duplicates(list(KEY), keep="last").sort_values(list(KEY), kind="stable")
    curves = {str(trial_id): list(zip(group[ITERATION].astype(int).tolist(), group[OBJECTIVE].astype(float).tolist()))
              for trial_id, group in searched.groupby(TRIAL_ID, sort=False)}
    values = record_rungs(scheduler, curves)
    return RebuiltRungs(results=len(searched), trials=len(curves), values=values, milestones=have)
