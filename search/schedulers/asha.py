"""ASHA over ``training_iteration`` (epochs): at each rung a trial goes on only if it is in the best
``1/reduction_factor`` of the searched trials that reached the rung; and its rungs rebuilt from the results rows
on resume."""
from __future__ import annotations

from typing import NamedTuple

import pandas as pd
from ray.tune.schedulers import ASHAScheduler, AsyncHyperBandScheduler

from p2m.names import ASHA, MODE, OBJECTIVE, RESULTS_DIR
from results import storage
from results.schema import BASELINE, ITERATION, KEY, TRIAL_ID
from results.parquet import list_parts, read_results
from search.ray_adapter import asha_milestones, record_rungs, tuner_scheduler
from search.schedulers.base import KeepBaselines, Strategy, register


class BaselineASHA(KeepBaselines, ASHAScheduler):
    """ASHA whose rungs are the searched trials' own (:class:`KeepBaselines`)."""


@register
class Asha(Strategy):
    name = ASHA

    def build(self, cfg, space, baselines):
        return BaselineASHA(time_attr=ITERATION, metric=OBJECTIVE, mode=MODE, max_t=cfg.max_t,
                            grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor,
                            baselines=baselines, max_epochs=cfg.max_t)

    def rungs(self, scheduler):
        return asha_milestones(scheduler)

    def restored(self, tuner, exp, cfg):
        # Ray restores ASHA as it was pickled at launch, its rungs empty (ray-project/ray#30838)
        return str(restore_rungs(tuner, exp, cfg.rungs))


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
        rows: the results rows (``results.parquet.read_results``): ``TRIAL_ID``, ``ITERATION``, ``OBJECTIVE`` and
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
