"""The analysis pictures (PNG, matplotlib's Agg backend): each function draws one figure for one or several
experiments and returns the path it wrote (through a temporary name, so a picture is whole or absent)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from p2m.atomic import atomic_path  # noqa: E402
from p2m.names import ASHA, EPOCH, OBJECTIVE, STAGES, TERMS, val_column, weight  # noqa: E402
from results.analysis.experiment import Experiment  # noqa: E402
from results.analysis.pareto import front  # noqa: E402
from results.runs import read_race, read_runs, summarise_runs  # noqa: E402
from results.schema import (BASELINE, EPOCHS, ITERATION, LAST_PREFIX, PHASE_RACE, ROUND, SAMPLE_COLUMNS,  # noqa: E402
                            SEED, STOP_COMPLETED, STOP_REASON, TRIAL_ID, WEIGHT_COLUMNS)
from results.parquet import ResultsError  # noqa: E402
from results.analysis.tables import CD, anytime, ranked, short  # noqa: E402
from results.trials import lineage, pick_best  # noqa: E402

CD3 = val_column(3, CD)


def learning_curves(experiments: list[Experiment], path: str | os.PathLike) -> Path:
    """Stage-3 validation CD x 1000 per epoch of every trial: stopped trials faded, trials that reached max_t
    solid, each baseline named in its own colour, dashes and marker (:func:`baseline_styles`), the best trial
    thick; ASHA's rungs as vertical lines."""
    fig, axes = _panels(len(experiments), 6.4, 4.2)
    styles = baseline_styles(name for exp in experiments for name in exp.trials[BASELINE].dropna())
    for ax, exp in zip(axes, experiments):
        best = _best_id(exp)
        reason = exp.trials.set_index(TRIAL_ID)[STOP_REASON]
        baselines = exp.trials.set_index(TRIAL_ID)[BASELINE]
        for trial_id, rows in exp.results.groupby(TRIAL_ID):
            rows = rows.sort_values(ITERATION)
            done = reason.get(trial_id) == STOP_COMPLETED
            name = baselines.get(trial_id)
            style = dict(color="0.55", alpha=0.35, lw=1.0)
            if done:
                style = dict(color="tab:blue", alpha=0.8, lw=1.2)
            if isinstance(name, str):
                style = dict(alpha=0.9, lw=1.6, label=f"baseline: {name}", **styles[name])
            if trial_id == best:
                label = f"best: {trial_id}" + (f" (baseline {name})" if isinstance(name, str) else "")
                style = dict(color="tab:red", alpha=1.0, lw=2.6, label=label)
            ax.plot(rows[ITERATION], rows[CD3], **{"marker": "o", "ms": 2.5, **style})
        for m in exp.settings.rung_epochs():
            ax.axvline(m, color="0.8", lw=0.8, zorder=0)
        ax.plot([], [], color="0.55", alpha=0.35, label="stopped early / errored")
        ax.plot([], [], color="tab:blue", label="reached max_t")
        ax.set(xlabel="epoch", ylabel="val CD x 1000, stage 3 (log scale)", title=_title(exp), yscale="log")
        ax.xaxis.get_major_locator().set_params(integer=True)
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis(matplotlib.ticker.FormatStrFormatter("%g"))  # 30, not 3 x 10^1
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def baseline_styles(names) -> dict[str, dict]:
    """A colour, a dash pattern and a marker for each baseline name (sorted, so that a name looks the same in
    every panel and picture), none of them the searched trials' grey and blue or the best trial's red; the
    pattern and the marker tell apart even the names that share a colour (beyond 6) or a print in grey."""
    colours = ["tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    dashes = ["--", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]
    markers = ["s", "^", "D", "v", "P", "X", "*"]
    return {name: dict(color=colours[i % len(colours)], ls=dashes[i % len(dashes)], marker=markers[i % len(markers)],
                       ms=4.0)
            for i, name in enumerate(sorted(set(names)))}


def importance_bars(tables: dict[str, pd.DataFrame], path: str | os.PathLike) -> Path:
    """fANOVA importance (bars) and PED-ANOVA (dots) per parameter, one panel per experiment."""
    fig, axes = _panels(len(tables), 5.6, max(3.0, 0.9 + 0.28 * max((len(t) for t in tables.values()), default=1)))
    for ax, (name, table) in zip(axes, tables.items()):
        if table.empty:
            ax.text(0.5, 0.5, "too few trials reached max_t\nfor an importance estimate", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_axis_off()
            ax.set_title(name)
            continue
        t = table.iloc[::-1]
        y = np.arange(len(t))
        ax.barh(y, t["fanova"], color="tab:blue", label="fANOVA")
        ax.scatter(t["ped_anova"], y, color="tab:orange", zorder=3, s=18, label="PED-ANOVA")
        ax.set_yticks(y, t["param"], fontsize=8)
        n = int(t["trials"].iloc[0])
        ax.set(xlabel="importance (normalised)",
               title=f"{name}: {n} trials at epoch {int(t[EPOCH].iloc[0])}" + (" (rough: few trials)" if n < 20 else ""))
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def parallel_coordinates(exp: Experiment, path: str | os.PathLike) -> Path:
    """The 12 weights and the sample counts of every trial, each axis log10-scaled to its range; trials that
    reached max_t coloured by their last stage-3 CD, the others grey."""
    table = ranked(exp)
    cols = [short(c) for c in WEIGHT_COLUMNS + SAMPLE_COLUMNS if short(c) in table]
    cols = [c for c in cols if table[c].nunique(dropna=True) > 1] or cols
    values = table[cols].astype(float)
    logged = np.log10(values.where(values > 0))
    logged = logged.fillna(logged.min() - 0.5)  # a 0 (mesh vertices, not samples) sits below the axis' range
    lo, hi = logged.min(), logged.max()
    scaled = (logged - lo) / (hi - lo).replace(0, 1)
    done = (table[STOP_REASON] == STOP_COMPLETED).to_numpy()
    cd = table[CD3].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.75 * len(cols)), 4.6), constrained_layout=True)
    x = np.arange(len(cols))
    for i in np.flatnonzero(~done):
        ax.plot(x, scaled.iloc[i], color="0.7", alpha=0.5, lw=0.8)
    if done.any():
        norm = matplotlib.colors.Normalize(np.nanmin(cd[done]), np.nanmax(cd[done]))
        cmap = matplotlib.colormaps["viridis"]
        for i in np.flatnonzero(done)[np.argsort(-cd[done])]:  # the best drawn last, on top
            ax.plot(x, scaled.iloc[i], color=cmap(norm(cd[i])), lw=1.8)
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                     label="val CD x 1000, stage 3 (trials at max_t)")
    for i, c in enumerate(cols):
        ax.axvline(i, color="0.85", lw=0.8, zorder=0)
        ax.text(i, -0.04, f"{values[c].min():.3g}", ha="center", va="top", fontsize=6)
        ax.text(i, 1.04, f"{values[c].max():.3g}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x, cols, rotation=40, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    ax.set_title(f"{_title(exp)}: searched values (log scale per axis; grey: stopped early)")
    return _save(fig, path)


def stage_cd(exp: Experiment, path: str | os.PathLike, top: int = 8) -> Path:
    """Per-stage validation CD x 1000 of the top trials and the baselines (grouped bars)."""
    table = ranked(exp)
    shown = pd.concat([table.head(top), table[table[BASELINE].notna()]]).drop_duplicates(TRIAL_ID)
    labels = [f"#{r} {t}" + (f"\n({b})" if isinstance(b, str) else "") + f"\n{e} ep"
              for r, t, b, e in zip(shown["rank"], shown[TRIAL_ID], shown[BASELINE], shown[EPOCHS])]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(shown) + 1), 4.2), constrained_layout=True)
    x = np.arange(len(shown))
    for k, s in enumerate(STAGES):
        ax.bar(x + (k - 1) * 0.27, shown[val_column(s, CD)], width=0.27, label=f"stage {s}")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set(ylabel="val CD x 1000 (last epoch)", title=f"{_title(exp)}: per-stage CD of the top trials")
    ax.legend(fontsize=8)
    return _save(fig, path)


def tradeoff(exp: Experiment, path: str | os.PathLike) -> Path:
    """The trade-off a search made: stage-3 CD against its second objective (a multi-objective search) or
    against mesh smoothness (lower is smoother), the trials that reached max_t in colour with their Pareto
    front (no trial beats a front trial on both), the others grey at their last epoch, the baselines starred."""
    objectives = exp.settings.objective_modes()
    if len(objectives) > 1:
        (x, x_mode), (y, y_mode) = list(objectives.items())[:2]
    else:
        (x, x_mode), (y, y_mode) = (CD3, "min"), (val_column(3, "smoothness"), "min")
    trials = exp.trials
    if LAST_PREFIX + x not in trials or LAST_PREFIX + y not in trials:
        fig, ax = plt.subplots(figsize=(6.4, 4.6), constrained_layout=True)
        ax.text(0.5, 0.5, f"no trial reported {x} and {y}", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    done = front(trials, {x: x_mode, y: y_mode}).dropna(subset=[x, y])
    pts = done[done["on_front"]].sort_values(x)
    values = pd.DataFrame({c: pd.to_numeric(trials[LAST_PREFIX + c], errors="coerce") for c in (x, y)})  # last epoch
    stopped, named = trials[STOP_REASON] != STOP_COMPLETED, trials[BASELINE].notna()
    sx, sy = _scale(x), _scale(y)
    low = values[x].min()
    # a trial or baseline far off (the seed's loss: ten times the CD) squeezes the rest: a second panel zooms in
    zoom = bool(low > 0 and (values[x] > 2 * low).any())
    fig, axes = _panels(2 if zoom else 1, 6.0, 4.6)
    for ax, limit in zip(axes, [None, 2 * low] if zoom else [None]):
        within = values[x] <= limit if limit is not None else pd.Series(True, index=trials.index)
        ax.scatter(values.loc[stopped & within, x] * sx, values.loc[stopped & within, y] * sy, color="0.75", s=16,
                   label="stopped early (their last epoch)")
        shown = done[within.reindex(done.index)]
        ax.scatter(shown[x] * sx, shown[y] * sy, color="tab:blue", s=28, label="reached max_t")
        if len(pts):
            ax.step(pts[x] * sx, pts[y] * sy, where="post", color="tab:red", lw=1.5)
            ax.scatter(pts[x] * sx, pts[y] * sy, s=90, facecolors="none", edgecolors="tab:red", lw=1.5,
                       label=f"Pareto front ({len(pts)} trial{'s' if len(pts) > 1 else ''})")
            if limit is not None or not zoom:  # trial ids where there is room for them
                for _, row in pts[within.reindex(pts.index) & pts[BASELINE].isna()].iterrows():
                    ax.annotate(str(row[TRIAL_ID]), (row[x] * sx, row[y] * sy), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        starred = values[named & within].dropna().sort_values(y)
        for k, (i, (bx, by)) in enumerate(starred.iterrows()):
            ax.scatter(bx * sx, by * sy, marker="*", s=140, color="tab:orange", zorder=4)
            # labels of nearby baselines fan out instead of printing over each other
            ax.annotate(str(trials.at[i, BASELINE]), (bx * sx, by * sy), fontsize=8, xytext=(10, -14 + 12 * (k % 4)),
                        textcoords="offset points", color="tab:orange",
                        arrowprops={"arrowstyle": "-", "color": "tab:orange", "lw": 0.5})
        if limit is not None:  # the zoom's frame: what lies within it, not the front's line beyond
            ys = values.loc[within, y].dropna() * sy
            ax.set_xlim(low * sx - 0.05 * (limit - low) * sx, limit * sx * 1.02)
            pad = 0.1 * max(float(ys.max() - ys.min()), 1e-9)
            ax.set_ylim(float(ys.min()) - pad, float(ys.max()) + pad)
        ax.set(xlabel=_axis_label(x, x_mode, sx), ylabel=_axis_label(y, y_mode, sy),
               title=f"{_title(exp)}: trade-off, baselines starred" + (" (zoom)" if limit is not None else ""))
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def _scale(column: str) -> float:
    """Chamfer distances are shown x 1000, as everywhere in the report."""
    return 1000.0 if column.rsplit("_s", 1)[-1].split("_", 1)[-1].startswith("cd") and "x1000" not in column else 1.0


def _axis_label(column: str, mode: str, scale: float) -> str:
    return f"{column}{' x 1000' if scale != 1 else ''} ({'lower' if mode == 'min' else 'higher'} is better)"


def weight_schedule(exp: Experiment, path: str | os.PathLike) -> Path:
    """The loss weights the best trial's model was trained with, epoch by epoch, through every trial whose
    checkpoint it continued (:func:`results.trials.lineage`; a population search, ``pbt`` or ``pb2``, changes
    them during training), one panel per stage; dotted: the ``published`` baseline's, when it ran."""
    best = _best_id(exp)
    rows = lineage(exp.results, best) if best else exp.results.iloc[:0]
    published = exp.trials[exp.trials[BASELINE] == "published"] if BASELINE in exp.trials else exp.trials.iloc[:0]
    fig, axes = _panels(len(STAGES), 4.2, 3.6)
    for ax, stage in zip(axes, STAGES):
        for k, term in enumerate(TERMS):
            column = weight(stage, term).column
            if column in rows and len(rows):
                ax.step(rows[ITERATION], rows[column], where="post", color=f"C{k}", label=term, lw=1.6)
            if len(published) and column in published:
                ax.axhline(float(published[column].iloc[0]), color=f"C{k}", ls=":", lw=1)
        ax.set(yscale="log", xlabel="epoch", title=f"stage {stage}")
    axes[0].set_ylabel("loss weight (log)")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    owners = list(dict.fromkeys(rows[TRIAL_ID])) if len(rows) else []
    fig.suptitle(f"{_title(exp)}: the weights the best model ({best or 'none finished'}) trained with, epoch by "
                 f"epoch ({exp.settings.scheduler}; trained by {' then '.join(map(str, owners)) or '-'})", fontsize=9)
    return _save(fig, path)


def anytime_curves(experiments: list[Experiment], path: str | os.PathLike) -> Path:
    """The best stage-3 CD of a finished trial against the trial-epochs spent, one line per experiment."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    for exp in experiments:
        curve = anytime(exp).dropna(subset=["best_cd_x1000"])
        if len(curve):
            ax.step(curve["trial_epochs"], curve["best_cd_x1000"], where="post", lw=1.8,
                    label=f"{exp.name} ({exp.settings.scheduler}, {exp.settings.algorithm})")
    ax.set(xlabel="trial-epochs spent", ylabel="best val CD x 1000 at max_t so far",
           title="search progress against compute")
    ax.legend(fontsize=8)
    return _save(fig, path)


def fidelity_curve(table: pd.DataFrame, exp: Experiment, threshold: float, path: str | os.PathLike) -> Path:
    """Spearman and Kendall correlation of each epoch's ranking with the last epoch's, with their 95%
    intervals, and the lower bound a grace rung needs."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    for name, color in (("spearman", "tab:blue"), ("kendall", "tab:green")):
        ax.fill_between(table[EPOCH], table[f"{name}_low"], table[f"{name}_high"], color=color, alpha=0.2)
        ax.plot(table[EPOCH], table[name], marker="o", color=color, label=f"{name} (95% interval)")
    ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"lower bound a grace rung needs ({threshold})")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set(xlabel="epoch", ylabel=f"rank correlation with epoch {exp.settings.max_t}", ylim=(-1.05, 1.05),
           title=f"{exp.name}: do early epochs rank trials as the last? ({int(table['trials'].iloc[0])} trials)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def replay_picture(table: pd.DataFrame, exp: Experiment, path: str | os.PathLike) -> Path:
    """Each replayed scheduler setting: the trial-epochs it spends against FIFO's, and how often it keeps
    FIFO's winner (top left is best)."""
    fig, ax = plt.subplots(figsize=(6.8, 4.6), constrained_layout=True)
    markers = {ASHA: "o", "hyperband": "s", "sha": "^"}
    norm = matplotlib.colors.Normalize(table["grace_period"].min(), table["grace_period"].max())
    for algorithm, group in table.groupby("algorithm"):
        points = ax.scatter(group["epochs_share"], group["winner_kept"], c=group["grace_period"], cmap="viridis",
                            norm=norm, marker=markers.get(algorithm, "o"), s=30 + 25 * group["reduction_factor"],
                            label=algorithm, edgecolors="k", linewidths=0.4)
    fig.colorbar(points, ax=ax, label="grace period (epochs)")
    ax.set(xlabel="trial-epochs spent / FIFO's", ylabel="share of orderings keeping FIFO's winner",
           xlim=(0, 1.02), ylim=(-0.02, 1.02),
           title=f"{exp.name}: early stopping replayed (marker size: reduction factor)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def race_picture(exp: Experiment, path: str | os.PathLike) -> Path:
    """The race (:mod:`search.race`): each candidate's validation CD x 1000 per round (its seed's run, dots) and its
    mean so far (line); a dropped candidate's line ends with a cross at the round it was dropped; the winner thick.
    Left: the values; right: each run's difference from the winner's run on the same seed (the paired view the
    race's test reads)."""
    record = read_race(exp.dir)
    runs = summarise_runs(read_runs(exp.dir, PHASE_RACE))
    fig, (ax, paired) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    winner = runs[runs[TRIAL_ID] == record["winner"]].set_index(SEED)[OBJECTIVE]
    for k, candidate in enumerate(record["candidates"]):
        rows = runs[runs[TRIAL_ID] == candidate].sort_values(ROUND)
        if rows.empty:
            continue
        color, label = f"C{k}", record["labels"].get(candidate, candidate)
        won = candidate == record["winner"]
        values = 1000 * rows[OBJECTIVE].to_numpy()
        mean = np.cumsum(values) / np.arange(1, len(values) + 1)
        ax.scatter(rows[ROUND], values, color=color, s=18, alpha=0.6)
        ax.plot(rows[ROUND], mean, color=color, lw=2.6 if won else 1.4, label=label + (" (winner)" if won else ""))
        diff = 1000 * (rows.set_index(SEED)[OBJECTIVE] - winner.reindex(rows[SEED]).to_numpy())
        paired.plot(rows[ROUND], diff.to_numpy(), color=color, marker="o", ms=3.5, lw=1.2, label=label)
        if candidate in record["dropped"]:
            at = record["dropped"][candidate][ROUND]
            ax.scatter([at], [mean[list(rows[ROUND]).index(at)]], marker="x", s=80, color=color, zorder=3)
            paired.scatter([at], [diff.to_numpy()[list(rows[ROUND]).index(at)]], marker="x", s=80, color=color,
                           zorder=3)
    for axis in (ax, paired):
        axis.set_xlabel("round (one fresh seed per round)")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("val CD x 1000 at max_t (dots: runs; lines: mean so far)")
    paired.axhline(0, color="0.3", lw=0.8)
    paired.set_ylabel("difference from the winner on the same seed")
    ax.legend(fontsize=8)
    ax.set_title(f"{_title(exp)}: race, {len(record['candidates'])} candidates, {record['rounds']} rounds")
    paired.set_title("paired by seed (a cross: dropped by the paired test)")
    return _save(fig, path)


def _best_id(exp: Experiment) -> str | None:
    try:
        return pick_best(exp.trials)[TRIAL_ID]
    except ResultsError:
        return None


def _title(exp: Experiment) -> str:
    return f"{exp.name}" + (" (partial)" if exp.partial else "")


def _panels(n: int, width: float, height: float):
    fig, axes = plt.subplots(1, max(n, 1), figsize=(width * max(n, 1), height), constrained_layout=True,
                             squeeze=False)
    return fig, list(axes[0])


def _save(fig, path: str | os.PathLike) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return Path(path)


__all__ = ["anytime_curves", "baseline_styles", "fidelity_curve", "importance_bars", "learning_curves",
           "parallel_coordinates", "replay_picture", "stage_cd", "tradeoff", "weight_schedule"]
