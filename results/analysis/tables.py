"""The analysis tables of one or several experiments, as plain DataFrames (numbers unformatted).

Conventions shared by every table:

* A trial's figures are those of its last result row (the epoch it ended at), the figure ASHA compared.
* Trials are ranked, and the best one picked, by :mod:`results.trials`' one rule (the console leaderboard
  and ``p2m search train-best`` use it too).
* CD is reported x 1000 (``cd_x1000``), F-scores in percent, as the evaluation writes them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from p2m.names import CONFIG_PREFIX, EPOCH, STAGES, metric_row, val_column
from results.analysis.experiment import Experiment, last_rows
from results.schema import (BASELINE, EPOCHS, ITERATION, ITERATIONS, LAST_OBJECTIVE, SAMPLE_COLUMNS, STOP_COMPLETED,
                            STOP_EARLY, STOP_ERRORED, STOP_REASON, STOP_UNFINISHED, TIMESTAMP, TIME_THIS_ITER_S,
                            TIME_TOTAL_S, TRIAL_ID, WEIGHT_COLUMNS, WRITTEN_AT)
from results.parquet import ResultsError
from results.trials import pick_best, rank_trials

CD = "cd_x1000"
# (metric, True when lower is better) compared between baselines and the best trial
COMPARED = tuple((m, not metric_row(m).higher_is_better) for m in ("cd_x1000", "f_tau", "f_2tau", "normal_consistency",
                                                                "smoothness"))
WITHIN = 0.02  # "reached the best": within 2% of the experiment's final best CD


def short(column: str) -> str:
    """``config.loss.w2_edge`` -> ``w2_edge``; ``config.data.gt_samples`` -> ``gt_samples``."""
    return column.rsplit(".", 1)[-1] if column.startswith(CONFIG_PREFIX) else column


def ranked(exp: Experiment) -> pd.DataFrame:
    """Every trial in rank order (:func:`results.trials.rank_trials`) with its last row's metrics, the 12
    weights and the sample counts."""
    trials = rank_trials(exp.trials).set_index(TRIAL_ID, drop=False).rename_axis(None)
    last = last_rows(exp.results)
    metrics = [val_column(s, m) for s in STAGES for m in (CD, "f_tau", "f_2tau", "normal_consistency",
                                                          "smoothness")]
    out = trials[["rank", TRIAL_ID, BASELINE, STOP_REASON, ITERATIONS]].copy()
    for col in metrics:
        out[col] = last[col].reindex(out.index) if col in last else np.nan
    for col in WEIGHT_COLUMNS + SAMPLE_COLUMNS:  # the config: from the trials table, else from the rows
        source = trials[col] if col in trials else last[col].reindex(out.index) if col in last else np.nan
        out[short(col)] = source
    return out.reset_index(drop=True).rename(columns={ITERATIONS: EPOCHS})


def leaderboard(exp: Experiment, top: int = 10) -> pd.DataFrame:
    """The ``top`` ranked trials with per-stage CD, F-scores, the 12 weights and the sample counts."""
    return ranked(exp).head(top).reset_index(drop=True)


def baselines_vs_best(exp: Experiment) -> pd.DataFrame:
    """Each baseline against the best trial, metric by metric and stage by stage, at the same epoch (the
    fewer epochs of the two, in case ASHA stopped the baseline early).

    Columns: baseline, baseline_trial, best_trial, epoch, stage, metric, baseline_value, best_value,
    change (best / baseline - 1), improved (the best trial is better on this metric).
    """
    columns = [BASELINE, "baseline_trial", "best_trial", EPOCH, "stage", "metric", "baseline_value",
               "best_value", "change", "improved"]
    base = exp.trials[exp.trials[BASELINE].notna()]
    try:
        best = pick_best(exp.trials)
    except ResultsError:  # no trial reached max_t: nothing to compare with
        base = base.iloc[:0]
    if base.empty:
        return pd.DataFrame(columns=columns)
    rows = exp.results.set_index([TRIAL_ID, ITERATION])
    out = []
    for _, b in base.iterrows():
        epoch = int(min(b[ITERATIONS], best[ITERATIONS]))
        if epoch < 1:
            continue
        for s in STAGES:
            for metric, lower_better in COMPARED:
                col = val_column(s, metric)
                bv = float(rows.loc[(b[TRIAL_ID], epoch), col])
                v = float(rows.loc[(best[TRIAL_ID], epoch), col])
                change = v / bv - 1 if bv != 0 else np.nan
                out.append([b[BASELINE], b[TRIAL_ID], best[TRIAL_ID], epoch, s, metric, bv, v, change,
                            bool(v < bv if lower_better else v > bv)])
    return pd.DataFrame(out, columns=columns)


def rung_table(exp: Experiment) -> pd.DataFrame:
    """How many trials entered each ASHA rung and how many left there, and why.

    One row per milestone: ``start`` (epoch 0, every trial), ASHA's rungs, and ``max_t``. A trial *enters*
    a milestone when it reports that epoch; it *leaves* at the last milestone it entered: stopped early
    (ASHA), errored, or unfinished. ``continued`` went on to the next milestone; at max_t they completed.
    Also the best and median stage-3 CD x 1000 reported at the milestone's epoch.
    """
    t = exp.trials
    milestones = [0] + exp.settings.rung_epochs() + [exp.settings.max_t]
    at = exp.results.pivot_table(index=TRIAL_ID, columns=ITERATION, values=val_column(3, CD), aggfunc="last")
    rows = []
    for i, m in enumerate(milestones):
        upper = milestones[i + 1] if i + 1 < len(milestones) else np.inf
        entered = t[t[ITERATIONS] >= m]
        here = entered[entered[ITERATIONS] < upper]
        final = i == len(milestones) - 1
        values = at[m].dropna() if m in at else pd.Series(dtype=float)
        rows.append({
            "milestone": "start" if m == 0 else "max_t" if final else f"rung {i}", EPOCH: m,
            "entered": len(entered),
            "stopped_early": int((here[STOP_REASON] == STOP_EARLY).sum()),
            "errored": int((here[STOP_REASON] == STOP_ERRORED).sum()),
            "unfinished": int((here[STOP_REASON] == STOP_UNFINISHED).sum()),
            "continued": int(len(entered) - len(here)) if not final else 0,
            "completed": int((here[STOP_REASON] == STOP_COMPLETED).sum()) if final else 0,
            "best_cd_x1000": float(values.min()) if len(values) else np.nan,
            "median_cd_x1000": float(values.median()) if len(values) else np.nan,
        })
    return pd.DataFrame(rows)


def cost_table(exp: Experiment) -> pd.DataFrame:
    """One row: what the search cost and what early stopping saved.

    trial_hours sums each trial's training time (Ray's ``time_total_s`` at its last row); cpu_hours and
    gpu_hours multiply it by the trial's resources. The no-early-stopping estimate runs every trial that
    was not errored to ``max_t`` at its own mean epoch time (errored trials cost what they cost);
    ``saved_share`` is 1 - actual / that estimate, in epochs and in hours.
    """
    last = last_rows(exp.results)
    t = exp.trials.set_index(TRIAL_ID)
    iters = t[ITERATIONS].astype(float)
    seconds = last[TIME_TOTAL_S].reindex(t.index).fillna(0.0).astype(float)
    errored = t[STOP_REASON] == STOP_ERRORED
    max_t = exp.settings.max_t
    per_epoch = seconds / iters.where(iters > 0)
    full_seconds = float(np.where(errored, seconds, per_epoch.fillna(0.0) * max_t).sum())
    full_epochs = float(np.where(errored, iters, max_t).sum())
    hours = float(seconds.sum()) / 3600
    start = (exp.results[TIMESTAMP] - exp.results[TIME_THIS_ITER_S]).min()
    return pd.DataFrame([{
        "trials": len(t), "trial_epochs": int(iters.sum()), "no_stopping_epochs": int(full_epochs),
        "epochs_saved_share": 1 - float(iters.sum()) / full_epochs if full_epochs else np.nan,
        "trial_hours": hours, "cpu_hours": hours * exp.settings.cpu, "gpu_hours": hours * exp.settings.gpu,
        "no_stopping_hours": full_seconds / 3600,
        "hours_saved_share": 1 - hours * 3600 / full_seconds if full_seconds else np.nan,
        "wall_hours": float(exp.results[TIMESTAMP].max() - start) / 3600,
    }])


def anytime(exp: Experiment) -> pd.DataFrame:
    """The search's best result against the compute it had used: result rows in the order they arrived,
    cumulative trial-epochs, and the lowest stage-3 CD x 1000 of any trial that had reached max_t so far."""
    df = exp.results.sort_values(WRITTEN_AT, kind="stable").reset_index(drop=True)
    final = df[ITERATION] >= exp.settings.max_t
    cd = df[val_column(3, CD)].where(final)
    return pd.DataFrame({"trial_epochs": np.arange(1, len(df) + 1), TRIAL_ID: df[TRIAL_ID],
                         "best_cd_x1000": cd.cummin().ffill()})


def comparison(experiments: list[Experiment]) -> pd.DataFrame:
    """One row per experiment, side by side: how it was run, what it cost, what it found, how soon."""
    rows = []
    for exp in experiments:
        t = exp.trials
        counts = t[STOP_REASON].value_counts()
        cost = cost_table(exp).iloc[0]
        curve = anytime(exp)
        try:
            best = pick_best(t)
            best_cd, best_id = 1000 * float(best[LAST_OBJECTIVE]), best[TRIAL_ID]
            near = curve[curve["best_cd_x1000"] <= best_cd * (1 + WITHIN)]
            epochs_to = int(near["trial_epochs"].iloc[0]) if len(near) else np.nan
        except ResultsError:
            best_cd, best_id, epochs_to = np.nan, None, np.nan
        rows.append({
            "experiment": exp.name, "scheduler": exp.settings.scheduler, "algorithm": exp.settings.algorithm,
            "max_t": exp.settings.max_t, "trials": len(t),
            **{reason: int(counts.get(reason, 0)) for reason in (STOP_COMPLETED, STOP_EARLY, STOP_ERRORED,
                                                                 STOP_UNFINISHED)},
            "trial_epochs": int(cost["trial_epochs"]), "trial_hours": float(cost["trial_hours"]),
            "best_trial": best_id, "best_cd_x1000": best_cd, "epochs_to_within_2pct": epochs_to,
            "partial": exp.partial,
        })
    return pd.DataFrame(rows)
