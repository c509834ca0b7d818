"""Which searched parameters matter: Optuna's importance evaluators on a study rebuilt from the Parquet rows.

The study is in memory: one ``FrozenTrial`` per trial, its parameters from the ``config.*`` columns and
its value the stage-3 validation CD at the chosen epoch. By default only trials that reached ``max_t``
count (their value is the finished run's); ``epoch=`` a rung uses every trial that reported that epoch,
more trials at an earlier, noisier signal. The distributions are the search's own, read from its space file
(:mod:`results.space`). An evaluator that cannot run on a study is named with its error, never turned
into a silent blank.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import optuna
import pandas as pd

from p2m.codec import to_plain
from p2m.names import CONFIG_PREFIX, DIRECTIONS, EPOCH, MODE, OBJECTIVE, config_column
from results.analysis.experiment import Experiment
from results.schema import ITERATION, STOP_COMPLETED, STOP_REASON, TRIAL_ID
from results.space import contains
from results.analysis.tables import short

EVALUATORS = ("fanova", "ped_anova")
MIN_TRIALS = 3  # fewer trials than this and no evaluator is run
# PED-ANOVA compares the top quantile's parameter density with all trials'; Optuna's default top 10% is a
# handful of trials in a search of tens, too few to tell a cause from chance, so the top quarter is used
TOP_QUANTILE = 0.25


def rebuild_study(exp: Experiment, epoch: int | None = None) -> optuna.Study:
    """An in-memory minimisation study of the experiment's trials (see the module docstring)."""
    epoch = epoch or exp.settings.max_t
    rows = exp.results[exp.results[ITERATION] == epoch]
    if epoch == exp.settings.max_t:
        done = set(exp.trials.loc[exp.trials[STOP_REASON] == STOP_COMPLETED, TRIAL_ID])
        rows = rows[rows[TRIAL_ID].isin(done)]
    rows = rows[np.isfinite(rows[OBJECTIVE].astype(float))]
    distributions = _distributions(exp, rows)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    study = optuna.create_study(direction=DIRECTIONS[MODE])
    for _, row in rows.iterrows():
        params = {key: to_plain(row[config_column(key)]) for key in distributions}
        if not all(contains(distributions[key], value) for key, value in params.items()):
            continue  # a baseline outside the space: compared, but no point of the searched distributions
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(row[OBJECTIVE]),
                                                  user_attrs={TRIAL_ID: str(row[TRIAL_ID])}))
    return study


class Importance(NamedTuple):
    table: pd.DataFrame  # param, fanova, ped_anova, trials, epoch; most important first
    failures: dict[str, str]  # evaluator -> the error it raised on this study


def importance(exp: Experiment, epoch: int | None = None, seed: int = 0) -> Importance:
    """Parameter importances (each evaluator's normalised to sum to 1), most important first.

    With fewer than ``MIN_TRIALS`` trials the table is empty. An evaluator that raises on the study leaves
    its column NaN and its error in ``failures``.
    """
    study = rebuild_study(exp, epoch)
    columns = ["param", *EVALUATORS, "trials", EPOCH]
    params = list(study.trials[0].distributions) if study.trials else []
    if len(study.trials) < MIN_TRIALS or not params:
        return Importance(pd.DataFrame(columns=columns), {})
    evaluators = {"fanova": lambda: optuna.importance.FanovaImportanceEvaluator(seed=seed),
                  "ped_anova": lambda: optuna.importance.PedAnovaImportanceEvaluator(target_quantile=TOP_QUANTILE)}
    out = pd.DataFrame({"param": [short(CONFIG_PREFIX + p) for p in params]})
    failures = {}
    for name, make in evaluators.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the experimental-API warning of PED-ANOVA
            try:
                values = optuna.importance.get_param_importances(study, evaluator=make(), normalize=True)
            except Exception as exc:  # any evaluator error is reported, not raised: the rest of the analysis stands
                values = {}
                failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        out[name] = [float(values.get(p, np.nan)) for p in params]
    out["trials"] = len(study.trials)
    out[EPOCH] = epoch or exp.settings.max_t
    table = out.sort_values(["fanova", "ped_anova"], ascending=False, na_position="last",
                            kind="stable").reset_index(drop=True)
    return Importance(table, failures)


def _distributions(exp: Experiment, rows: pd.DataFrame) -> dict:
    """The searched keys that vary among ``rows``, with the search's distributions."""
    return {key: dist for key, dist in exp.space.items()
            if config_column(key) in rows and rows[config_column(key)].nunique(dropna=True) >= 2}


