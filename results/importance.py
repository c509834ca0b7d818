"""Which searched parameters matter: Optuna's importance evaluators on a study rebuilt from the Parquet rows.

The study is in memory: one ``FrozenTrial`` per trial, its parameters from the ``config.*`` columns and
its value the stage-3 validation CD at the chosen epoch. By default only trials that reached ``max_t``
count (their value is the finished run's); ``epoch=`` a rung uses every trial that reported that epoch,
more trials at an earlier, noisier signal. Distributions come from the search's ``space.json``; an older
experiment without one gets them from the values seen (log-uniform over their range, or a choice).
"""
from __future__ import annotations

import warnings

import numpy as np
import optuna
import pandas as pd

from results.experiment import Experiment
from results.schema import CONFIG_PREFIX, ITERATION, SAMPLE_COLUMNS, STOP_COMPLETED, STOP_REASON, TRIAL_ID, \
    WEIGHT_COLUMNS, val_column
from results.store import ResultsError
from results.tables import short

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
    objective = val_column(3, "cd")
    rows = rows[np.isfinite(rows[objective].astype(float))]
    distributions = _distributions(exp, rows)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    study = optuna.create_study(direction="minimize")
    for _, row in rows.iterrows():
        params = {key: _plain(row[CONFIG_PREFIX + key]) for key in distributions}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(row[objective]),
                                                  user_attrs={TRIAL_ID: str(row[TRIAL_ID])}))
    return study


def importance(exp: Experiment, epoch: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Parameter importances (each evaluator's normalised to sum to 1), most important first.

    Columns: param, fanova, ped_anova, trials (how many trials the study holds), epoch. An evaluator that
    cannot run on this study (too few trials) gives NaN; with fewer than ``MIN_TRIALS`` trials the table
    is empty.
    """
    study = rebuild_study(exp, epoch)
    columns = ["param", *EVALUATORS, "trials", "epoch"]
    params = list(study.trials[0].distributions) if study.trials else []
    if len(study.trials) < MIN_TRIALS or not params:
        return pd.DataFrame(columns=columns)
    evaluators = {"fanova": optuna.importance.FanovaImportanceEvaluator(seed=seed),
                  "ped_anova": optuna.importance.PedAnovaImportanceEvaluator(target_quantile=TOP_QUANTILE)}
    out = pd.DataFrame({"param": [short(CONFIG_PREFIX + p) for p in params]})
    for name, evaluator in evaluators.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the experimental-API warning of PED-ANOVA
            try:
                values = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
            except (ValueError, RuntimeError, ZeroDivisionError):
                values = {}
        out[name] = [float(values.get(p, np.nan)) for p in params]
    out["trials"] = len(study.trials)
    out["epoch"] = epoch or exp.settings.max_t
    return out.sort_values(["fanova", "ped_anova"], ascending=False, na_position="last",
                           kind="stable").reset_index(drop=True)


def _distributions(exp: Experiment, rows: pd.DataFrame) -> dict:
    """The searched keys that vary among ``rows``, with their distributions."""
    out = {}
    keys = list(exp.space) or [c[len(CONFIG_PREFIX):] for c in WEIGHT_COLUMNS + SAMPLE_COLUMNS]
    for key in keys:
        col = CONFIG_PREFIX + key
        if col not in rows or rows[col].nunique(dropna=True) < 2:
            continue  # fixed (the anchor) or constant among these trials: nothing to attribute
        domain = exp.space.get(key)
        values = [_plain(v) for v in rows[col]]
        if domain is None:
            numeric = all(isinstance(v, (int, float)) and v > 0 for v in values)
            integral = all(isinstance(v, int) for v in values)
            domain = ({"log_uniform": [min(values), max(values)]} if numeric and not integral
                      else {"choice": sorted(set(values))})
        if "log_uniform" in domain:
            lo, hi = domain["log_uniform"]
            out[key] = optuna.distributions.FloatDistribution(float(lo), float(hi), log=True)
        elif "choice" in domain:
            out[key] = optuna.distributions.CategoricalDistribution([_plain(v) for v in domain["choice"]])
        else:
            raise ResultsError(f"{exp.dir}/space.json: {key}: unknown domain {domain!r}")
    return out


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
