"""The verdict a report opens with: which configuration to use, whether it beats each baseline beyond the noise,
how noisy the objective is, whether its early stopping could trust its rungs, and which weights mattered.

- **Decision**: the first sentence. The configuration ``train-best`` retrained as the best (the race's winner, else
  the search's best trial) against ``published`` on stage-3 test CD: ``better``, ``worse``, ``equivalent`` (the
  whole interval inside the margin, :data:`results.analysis.paired.EQUIVALENCE_MARGINS`: searching did not pay) or
  undecided, and then how many seeds the measured noise says would decide a change of the size seen.
- **Changes** (stage 3: CD, F@tau, normal consistency), from the best evidence the experiment holds:
  ``train-best`` retrains of the best and the baseline on the same fresh seeds, evaluated on the test
  views (paired by seed and view, :mod:`results.analysis.paired`); else the two trials' per-view validation at their
  last common epoch (one seed: the interval covers test models only); else their mean validation figures,
  without an interval. All the comparisons with intervals are one family: their intervals are at the Bonferroni
  level ``1 - ALPHA / m`` and their verdicts Holm-corrected (:func:`results.analysis.paired.decide_family`).
- **Noise floor**: the within-configuration seed standard deviation of the retrained runs
  (:mod:`results.analysis.noise`), and the smallest change the seeds spent can resolve.
- **Weights**: each configuration's 12 weights as a stage x term matrix.
- **Fidelity**: how the first rung's ranking agrees with the last epoch's over the trials with full curves
  (:mod:`results.analysis.fidelity`), and a warning when its lower bound is under 0.5.
- **Importance**: the three searched parameters fANOVA ranks highest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from p2m.names import (EPOCH, OBJECTIVE, STAGES, TERMS, TRAIN_BEST_VIEWS_FILE, learned_column,
                       test_column, train_best_dir, val_column, weight)
from results.analysis.experiment import Experiment
from results.analysis.fidelity import THRESHOLD, full_curves, predictive_grace, rank_fidelity
from results.analysis.noise import POWER, resolvable_change, seed_sd, seeds_needed
from results.analysis.paired import ALPHA, COMPARED, EQUIVALENCE_MARGINS, compare_arms, decide_family
from results.runs import read_race, read_runs, summarise_runs
from results.schema import (BASELINE, BEST_ARM, ITERATION, ITERATIONS, LAST_PREFIX, PHASE, REFERENCE, ROUND, SEED,
                            TRIAL_ID)
from results.parquet import ResultsError, read_table, read_views
from results.trials import pick_best

BEST = BEST_ARM
HEADLINE = ("cd_x1000", "f_tau", "normal_consistency")  # the stage-3 metrics the verdict reports
DECISION_METRIC = "cd_x1000"


@dataclass
class Verdict:
    experiment: str
    best_trial: str | None
    weights: pd.DataFrame  # index: stage; columns: (arm, term)
    changes: pd.DataFrame  # baseline, source, metric, best, baseline_value, change, low, high, p, p_holm, verdict
    fidelity: pd.DataFrame  # results.analysis.fidelity.rank_fidelity's table
    noise: dict = field(default_factory=dict)  # the noise floor (see _noise)
    race: dict | None = None  # the race's record (results.runs.read_race), when the experiment raced
    lines: list[str] = field(default_factory=list)  # what the console and the report's head say; the first decides


def decide(exp: Experiment, importance: pd.DataFrame | None = None) -> Verdict:
    """The verdict of one experiment (``importance``: its importance table, when computed)."""
    race = read_race(exp.dir)
    best = _best(exp, race)
    baselines = exp.trials[exp.trials[BASELINE].notna()].drop_duplicates(BASELINE)
    arms = {BEST: best} if best is not None else {}
    arms.update({row[BASELINE]: row for _, row in baselines.iterrows()})
    weights = pd.concat({arm: _weight_matrix(row) for arm, row in arms.items()}, axis=1) if arms else pd.DataFrame()
    rivals = baselines if best is None else baselines[baselines[TRIAL_ID] != best[TRIAL_ID]]
    changes = _family(exp, best, rivals) if best is not None and len(rivals) else pd.DataFrame()
    curves = full_curves(exp.results, exp.settings.max_t)
    fidelity = rank_fidelity(curves, n_boot=1000)
    v = Verdict(exp.name, None if best is None else str(best[TRIAL_ID]), weights, changes, fidelity, race=race)
    v.noise = _noise(exp, v.changes)
    v.lines = _lines(exp, v, importance, len(curves))
    return v


def _best(exp: Experiment, record: dict | None) -> pd.Series | None:
    """What the verdict compares: the trial train-best retrained as the best, else the race's winner, else the
    search's best trial (None when no trial reached max_t)."""
    retrained = _retrained(exp, None)
    chosen = (str(retrained[TRIAL_ID].iloc[0]) if retrained is not None and len(retrained)
              else record["winner"] if record and record.get("winner") else None)
    if chosen is not None and (exp.trials[TRIAL_ID] == chosen).any():
        return exp.trials[exp.trials[TRIAL_ID] == chosen].iloc[0]
    try:
        return pick_best(exp.trials)
    except ResultsError:
        return None


def _family(exp: Experiment, best: pd.Series, rivals: pd.DataFrame) -> pd.DataFrame:
    """Every rival's stage-3 headline changes as one family: intervals at the Bonferroni level, Holm's verdicts."""
    evidence = {row[BASELINE]: _evidence(exp, best, row) for _, row in rivals.iterrows()}
    m = sum(len(HEADLINE) for views in evidence.values() if views is not None)
    confidence = 1 - ALPHA / max(m, 1)
    parts = [_changes(exp, best, row, evidence[row[BASELINE]], confidence) for _, row in rivals.iterrows()]
    table = pd.concat(parts, ignore_index=True)
    tested = table["p"].notna()
    if tested.any():
        decided = decide_family(table[tested])
        table.loc[tested, ["p_holm", "verdict"]] = decided[["p_holm", "verdict"]].to_numpy()
    table["family"] = int(tested.sum())
    return table


def _weight_matrix(row: pd.Series) -> pd.DataFrame:
    """The 12 weights a trial trained with; with learned weighting, the chamfer weights it ended with."""
    def value(s: int, t: str) -> float:
        learned = row.get(LAST_PREFIX + learned_column(s)) if t == "chamfer" else None
        return float(learned) if learned is not None and pd.notna(learned) else float(row[weight(s, t).column])

    return pd.DataFrame([[value(s, t) for t in TERMS] for s in STAGES], index=pd.Index(STAGES, name="stage"),
                        columns=list(TERMS))


def _evidence(exp: Experiment, best: pd.Series, base: pd.Series) -> tuple[str, pd.DataFrame, pd.DataFrame] | None:
    """The paired per-view rows of the best and ``base``: their train-best retrains on the test views, else their
    validation views at their last common epoch; None when neither exists."""
    retrained = {arm: _retrained(exp, arm) for arm in (None, base[BASELINE])}
    if all(v is not None for v in retrained.values()):
        return "test", retrained[None], retrained[base[BASELINE]]
    epoch = int(min(best[ITERATIONS], base[ITERATIONS]))
    views = _validation_views(exp)
    if views is None or epoch < 1:
        return None
    at = views[views[ITERATION] == epoch].assign(seed=0)
    a, b = at[at[TRIAL_ID] == best[TRIAL_ID]], at[at[TRIAL_ID] == base[TRIAL_ID]]
    return (f"validation at epoch {epoch}", a, b) if len(a) and len(b) else None


def _changes(exp: Experiment, best: pd.Series, base: pd.Series, evidence, confidence: float) -> pd.DataFrame:
    name = base[BASELINE]
    columns = [BASELINE, "source", "metric", "best", "baseline_value", "change", "low", "high", "p", "p_holm",
               "verdict"]
    if evidence is None:
        epoch = int(min(best[ITERATIONS], base[ITERATIONS]))
        return pd.DataFrame([_point(exp, best, base, m, epoch) for m in HEADLINE], columns=columns)
    kind, a, b = evidence
    table = compare_arms(a, b, confidence=confidence)
    seeds = f"{int(table['seeds'].iloc[0])} fresh seeds" if kind == "test" else "1 seed"
    source = f"{kind}, {seeds} x {int(table['models'].iloc[0])} models, {100 * confidence:.1f}% intervals"
    rows = []
    for _, r in table[(table["stage"] == 3) & table["metric"].isin(HEADLINE)].iterrows():
        rows.append([name, source, r["metric"], r["best"], r["baseline"], r["change"], r["low"], r["high"], r["p"],
                     np.nan, r["verdict"]])
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
    return [base[BASELINE], f"validation at epoch {epoch}, no interval", metric, v, b, change, np.nan, np.nan, np.nan,
            np.nan, "no interval"]


def _retrained(exp: Experiment, baseline: str | None) -> pd.DataFrame | None:
    path = exp.dir / train_best_dir(baseline) / TRAIN_BEST_VIEWS_FILE
    return read_table(path) if path.is_file() else None


def _validation_views(exp: Experiment) -> pd.DataFrame | None:
    try:
        return read_views(exp.dir)
    except ResultsError:
        return None


def _noise(exp: Experiment, changes: pd.DataFrame) -> dict:
    """The noise floor: the seed standard deviation of stage-3 test CD within a configuration, pooled over the
    configurations train-best retrained (and of the validation CD over the race's); for the decision's comparison,
    the per-seed spread of its paired differences, the change its seeds resolve and the seeds a change of the size
    seen would need. Empty when nothing was retrained."""
    runs = summarise_runs(read_runs(exp.dir))
    out: dict = {}
    if runs.empty:
        return out
    cd = test_column(3, DECISION_METRIC)
    for phase, column in (("verdict", cd), ("race", OBJECTIVE)):
        mine = runs[(runs[PHASE] == phase) & runs[column].notna()] if column in runs else runs.iloc[:0]
        sd, dof = seed_sd(mine, group=TRIAL_ID, value=column)
        if dof:
            scale = 1000 if column == OBJECTIVE else 1
            out[phase] = {"sd": scale * sd, "relative": sd / mine[column].mean(), "dof": dof,
                          "configs": int(mine[TRIAL_ID].nunique()), "runs": len(mine)}
    head = _head(changes)
    best, ref = _retrained(exp, None), _retrained(exp, REFERENCE)
    if head is None or best is None or ref is None or not str(head["source"]).startswith("test"):
        return out
    per_seed = [df.groupby(SEED)[f"s3_{DECISION_METRIC}"].mean() for df in (best, ref)]
    both = per_seed[0].index.intersection(per_seed[1].index)
    n = len(both)
    m = max(int(head.get("family", 1)), 1)
    if n >= 2:
        diff = (per_seed[0][both] - per_seed[1][both]) / per_seed[1][both].mean()
        sd_diff = float(diff.std(ddof=1))
    elif "verdict" in out:
        sd_diff = float(np.sqrt(2) * out["verdict"]["relative"])
    else:
        return out
    out["paired"] = {"sd_diff": sd_diff, "seeds": n, "family": m,
                     "resolvable": resolvable_change(sd_diff, max(n, 1), alpha=ALPHA / m),
                     "needed": seeds_needed(head["change"], sd_diff, alpha=ALPHA / m)}
    return out


def _head(changes: pd.DataFrame) -> pd.Series | None:
    """The decision's comparison: the best against REFERENCE (else the first baseline) on stage-3 CD."""
    if changes is None or changes.empty:
        return None
    rows = changes[changes["metric"] == DECISION_METRIC]
    ref = rows[rows[BASELINE] == REFERENCE]
    return (ref if len(ref) else rows).iloc[0] if len(rows) else None


def decision(exp: Experiment, v: Verdict) -> str:
    """The report's first sentence: which configuration to use, its change against the reference on fresh seeds
    with its interval, and what would decide it where nothing is decided yet."""
    if v.best_trial is None:
        return "No decision: no trial reached max_t with a finite objective."
    label = _label(exp, v.best_trial, v.race)
    head = _head(v.changes)
    if head is None:
        return f"Use {label}: there is no baseline to compare it with."
    ref = head[BASELINE]
    change = f"{100 * head['change']:+.1f}%"
    interval = f" [{100 * head['low']:+.1f}, {100 * head['high']:+.1f}]" if np.isfinite(head["low"]) else ""
    what = f"stage-3 CD {change}{interval} against {ref} ({head['source']}"
    what += f"; Holm over {int(head['family'])} comparisons)" if np.isfinite(head["p"]) else ")"
    fresh = str(head["source"]).startswith("test")
    later = "" if fresh else "; retrain both on fresh seeds to decide (p2m search train-best --with-baselines)"
    margin = 100 * EQUIVALENCE_MARGINS.get(DECISION_METRIC, np.nan)
    if head["verdict"] == "better":
        return f"Use {label}: it beats {ref}, {what}{later}."
    if head["verdict"] == "worse":
        return f"Use {ref}: the search's answer {label} is worse, {what}{later}."
    if head["verdict"] == "equivalent":
        return (f"Use {ref}: {label} is equivalent to it within ±{margin:g}% ({what}): searching did not pay"
                f"{later}.")
    needed = v.noise.get("paired", {}).get("needed")
    more = (f"; the measured noise says about {needed:g} seeds per arm would decide a change this size"
            if needed is not None and np.isfinite(needed) else "")
    return f"Undecided between {label} and {ref}: {what}{more}{later}."


def _label(exp: Experiment, trial_id: str, record: dict | None) -> str:
    rows = exp.trials[exp.trials[TRIAL_ID] == trial_id]
    name = rows[BASELINE].iloc[0] if len(rows) else None
    how = " (the race's winner)" if record and record.get("winner") == trial_id else ""
    return (f"the baseline {name}" if isinstance(name, str) else f"trial {trial_id}") + how


def _noise_line(noise: dict) -> str:
    if not noise:
        return "  noise floor: unknown (no configuration was retrained with several seeds: p2m search race / train-best)"
    parts = []
    if "verdict" in noise:
        n = noise["verdict"]
        parts.append(f"seed SD of stage-3 test CDx1000 {n['sd']:.3f} ({100 * n['relative']:.1f}% of the mean; "
                     f"{n['runs']} runs of {n['configs']} configurations, {n['dof']} dof)")
    if "race" in noise:
        n = noise["race"]
        parts.append(f"of the race's val CDx1000 {n['sd']:.3f} ({100 * n['relative']:.1f}%, {n['dof']} dof)")
    line = "  noise floor: " + "; ".join(parts)
    if "paired" in noise:
        p = noise["paired"]
        line += (f"; the paired per-seed spread {100 * p['sd_diff']:.1f}% resolves changes of about "
                 f"±{100 * p['resolvable']:.1f}% with {p['seeds']} seeds ({100 * POWER:g}% power, alpha {ALPHA:g}/{p['family']})")
    return line


def _lines(exp: Experiment, v: Verdict, importance: pd.DataFrame | None, full: int) -> list[str]:
    lines = [decision(exp, v), f"verdict for {exp.name}:", _noise_line(v.noise)]
    if v.best_trial is None:
        return lines
    itself = exp.trials.loc[exp.trials[TRIAL_ID] == v.best_trial, BASELINE].dropna()
    if len(itself):
        lines.append(f"  the best is the baseline {itself.iloc[0]}: the search found nothing better")
    record = v.race
    if record:
        dropped = ", ".join(f"{record['labels'].get(c, c)} at round {d[ROUND]}" for c, d in record["dropped"].items())
        lines.append(f"  race: {len(record['candidates'])} candidates over {record['rounds']} rounds of fresh seeds; "
                     f"dropped: {dropped or 'none'}; winner {record['labels'].get(record['winner'], record['winner'])}")
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
    lines.append(f"  weights (rows: stage 1-3; columns: {', '.join(TERMS)}):")
    for arm in list(v.weights.columns.get_level_values(0).unique()):
        lines.append(f"    {arm}:")
        matrix = v.weights[arm]
        lines += [f"      s{s}  " + "  ".join(f"{x:8.3g}" for x in matrix.loc[s]) for s in STAGES]
    return lines


def _fidelity_lines(exp: Experiment, table: pd.DataFrame, full: int) -> list[str]:
    if table.empty:
        return [f"  fidelity: {full} trial(s) with full curves, too few to tell whether early epochs predict"]
    grace = predictive_grace(table)
    rungs = exp.settings.rung_epochs()
    out = []
    if rungs:
        row = table[table[EPOCH] == rungs[0]].iloc[0]
        status = "predicts" if row["spearman_low"] >= THRESHOLD else "WARNING: does not predict"
        out.append(f"  fidelity: the first rung (epoch {rungs[0]}) {status} the final ranking: Spearman "
                   f"{row['spearman']:.2f} [{row['spearman_low']:.2f}, {row['spearman_high']:.2f}] over {full} "
                   f"trials with full curves (lower bound needed: {THRESHOLD})")
    else:
        out.append(f"  fidelity: {full} full curves (FIFO)")
    out.append(f"  the earliest epoch whose ranking predicts the last (lower bound >= {THRESHOLD}): "
               + (f"{grace} -> grace_period {grace}" if grace else "none before max_t"))
    return out
