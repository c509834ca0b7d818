"""The verdict a report opens with: what the search found, whether it beats each baseline beyond the noise,
whether its early stopping could trust its rungs, and which weights mattered.

- **Weights**: the best trial's 12 weights as a stage x term matrix beside each baseline's.
- **Changes** (stage 3: CD, F@tau, normal consistency), from the best evidence the experiment holds:
  ``train-best`` retrains of the best trial and the baseline with the same seeds, evaluated on the test
  views (paired by seed and view, :mod:`results.paired`); else the two trials' per-view validation at their
  last common epoch (one seed: the interval covers test models only); else their mean validation figures,
  without an interval.
- **Fidelity**: how the first rung's ranking agrees with the last epoch's over the trials with full curves
  (:mod:`results.fidelity`), and a warning when its lower bound is under 0.5.
- **Importance**: the three searched parameters fANOVA ranks highest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from p2m.names import STAGES, TERMS, TRAIN_BEST_VIEWS_FILE, learned_column, train_best_dir, val_column, weight
from results.experiment import Experiment
from results.fidelity import THRESHOLD, full_curves, predictive_grace, rank_fidelity
from results.paired import COMPARED, compare_arms
from results.schema import BASELINE, ITERATION, ITERATIONS, LAST_PREFIX, TRIAL_ID
from results.store import ResultsError, read_table, read_views
from results.trials import pick_best

BEST = "best"
HEADLINE = ("cd_x1000", "f_tau", "normal_consistency")  # the stage-3 metrics the verdict reports


@dataclass
class Verdict:
    experiment: str
    best_trial: str | None
    weights: pd.DataFrame  # index: stage; columns: (arm, term)
    changes: pd.DataFrame  # baseline, source, metric, best, baseline_value, change, low, high, verdict
    fidelity: pd.DataFrame  # results.fidelity.rank_fidelity's table
    lines: list[str] = field(default_factory=list)  # what the console and the report's head say


def decide(exp: Experiment, importance: pd.DataFrame | None = None) -> Verdict:
    """The verdict of one experiment (``importance``: its importance table, when computed)."""
    try:
        best = pick_best(exp.trials)
    except ResultsError:
        best = None
    baselines = exp.trials[exp.trials[BASELINE].notna()].drop_duplicates(BASELINE)
    arms = {BEST: best} if best is not None else {}
    arms.update({row[BASELINE]: row for _, row in baselines.iterrows()})
    weights = pd.concat({arm: _weight_matrix(row) for arm, row in arms.items()}, axis=1) if arms else pd.DataFrame()
    rivals = baselines if best is None else baselines[baselines[TRIAL_ID] != best[TRIAL_ID]]
    changes = pd.concat([_changes(exp, best, row) for _, row in rivals.iterrows()], ignore_index=True) \
        if best is not None and len(rivals) else pd.DataFrame()
    curves = full_curves(exp.results, exp.settings.max_t)
    fidelity = rank_fidelity(curves, n_boot=1000)
    v = Verdict(exp.name, None if best is None else str(best[TRIAL_ID]), weights, changes, fidelity)
    v.lines = _lines(exp, v, importance, len(curves))
    return v


def _weight_matrix(row: pd.Series) -> pd.DataFrame:
    """The 12 weights a trial trained with; with learned weighting, the chamfer weights it ended with."""
    def value(s: int, t: str) -> float:
        learned = row.get(LAST_PREFIX + learned_column(s)) if t == "chamfer" else None
        return float(learned) if learned is not None and pd.notna(learned) else float(row[weight(s, t).column])

    return pd.DataFrame([[value(s, t) for t in TERMS] for s in STAGES], index=pd.Index(STAGES, name="stage"),
                        columns=list(TERMS))


def _changes(exp: Experiment, best: pd.Series, base: pd.Series) -> pd.DataFrame:
    name = base[BASELINE]
    columns = ["baseline", "source", "metric", "best", "baseline_value", "change", "low", "high", "verdict"]
    retrained = {arm: _retrained(exp, arm) for arm in (None, name)}
    if all(v is not None for v in retrained.values()):
        table = compare_arms(retrained[None], retrained[name])
        source = f"test, {int(table['seeds'].iloc[0])} seeds x {int(table['models'].iloc[0])} models"
    else:
        epoch = int(min(best[ITERATIONS], base[ITERATIONS]))
        views = _validation_views(exp)
        if views is not None and epoch >= 1:
            at = views[views[ITERATION] == epoch].assign(seed=0)
            a, b = at[at[TRIAL_ID] == best[TRIAL_ID]], at[at[TRIAL_ID] == base[TRIAL_ID]]
            if len(a) and len(b):
                table = compare_arms(a, b)
                source = f"validation at epoch {epoch}, 1 seed x {int(table['models'].iloc[0])} models"
            else:
                views = None
        if views is None or epoch < 1:
            return pd.DataFrame([_point(exp, best, base, m, epoch) for m in HEADLINE], columns=columns)
    rows = []
    for _, r in table[(table["stage"] == 3) & table["metric"].isin(HEADLINE)].iterrows():
        rows.append([name, source, r["metric"], r["best"], r["baseline"], r["change"], r["low"], r["high"],
                     r["verdict"]])
    return pd.DataFrame(rows, columns=columns)


def _point(exp: Experiment, best: pd.Series, base: pd.Series, metric: str, epoch: int) -> list:
    """A change from the mean validation figures alone: no interval, no verdict."""
    rows = exp.results.set_index([TRIAL_ID, ITERATION])
    col = val_column(3, metric)
    try:
        v, b = float(rows.loc[(best[TRIAL_ID], epoch), col]), float(rows.loc[(base[TRIAL_ID], epoch), col])
    except KeyError:
        v = b = np.nan
    relative = COMPARED[metric][1]
    change = v / b - 1 if relative else v - b
    return [base[BASELINE], f"validation at epoch {epoch}, no interval", metric, v, b, change, np.nan, np.nan,
            "no interval"]


def _retrained(exp: Experiment, baseline: str | None) -> pd.DataFrame | None:
    path = exp.dir / train_best_dir(baseline) / TRAIN_BEST_VIEWS_FILE
    return read_table(path) if path.is_file() else None


def _validation_views(exp: Experiment) -> pd.DataFrame | None:
    try:
        return read_views(exp.dir)
    except ResultsError:
        return None


def _lines(exp: Experiment, v: Verdict, importance: pd.DataFrame | None, full: int) -> list[str]:
    lines = [f"verdict for {exp.name}:"]
    if v.best_trial is None:
        return lines + ["  no trial reached max_t with a finite objective: nothing to compare"]
    itself = exp.trials.loc[exp.trials[TRIAL_ID] == v.best_trial, BASELINE].dropna()
    if len(itself):
        lines.append(f"  the best trial is the baseline {itself.iloc[0]}: the search found nothing better")
    lines.append(f"  best trial {v.best_trial}; weights (rows: stage 1-3; columns: {', '.join(TERMS)}):")
    arms = list(v.weights.columns.get_level_values(0).unique())
    width = max([12, *map(len, map(str, arms))])
    for arm in arms:
        matrix = v.weights[arm]
        cells = ["  ".join(f"{x:8.3g}" for x in matrix.loc[s]) for s in STAGES]
        lines.append(f"    {arm:>{width}}: " + " | ".join(cells))
    for _, r in v.changes.iterrows():
        relative, nc = COMPARED[r["metric"]][1], r["metric"] == "normal_consistency"
        unit, scale, digits = ("%", 100, 2) if relative else ("", 1, 3) if nc else (" pts", 1, 2)
        change = f"{scale * r['change']:+.{digits}f}{unit}" if np.isfinite(r["change"]) else "n/a"
        interval = f" [{scale * r['low']:+.{digits}f}, {scale * r['high']:+.{digits}f}]" if np.isfinite(r["low"]) else ""
        lines.append(f"  vs {r['baseline']}, stage-3 {r['metric']}: {change}{interval} -> {r['verdict']} "
                     f"({r['source']})")
    lines += _fidelity_lines(exp, v.fidelity, full)
    if importance is not None and len(importance):
        top = importance.dropna(subset=["fanova"]).head(3)
        rough = " (rough: fewer than 20 trials)" if int(importance["trials"].iloc[0]) < 20 else ""
        lines.append("  weights that matter most (fANOVA): "
                     + ", ".join(f"{p} {f:.2f}" for p, f in zip(top["param"], top["fanova"])) + rough)
    return lines


def _fidelity_lines(exp: Experiment, table: pd.DataFrame, full: int) -> list[str]:
    if table.empty:
        return [f"  fidelity: {full} trial(s) with full curves, too few to tell whether early epochs predict"]
    grace = predictive_grace(table)
    rungs = exp.settings.rung_epochs()
    out = []
    if rungs:
        row = table[table["epoch"] == rungs[0]].iloc[0]
        status = "predicts" if row["spearman_low"] >= THRESHOLD else "WARNING: does not predict"
        out.append(f"  fidelity: the first rung (epoch {rungs[0]}) {status} the final ranking: Spearman "
                   f"{row['spearman']:.2f} [{row['spearman_low']:.2f}, {row['spearman_high']:.2f}] over {full} "
                   f"trials with full curves (lower bound needed: {THRESHOLD})")
    else:
        out.append(f"  fidelity: {full} full curves (FIFO)")
    out.append(f"  the earliest epoch whose ranking predicts the last (lower bound >= {THRESHOLD}): "
               + (f"{grace} -> grace_period {grace}" if grace else "none before max_t"))
    return out
