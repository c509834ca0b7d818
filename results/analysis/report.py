"""``p2m results analyze``: every table and picture of one or several experiments, and a report.md.

The output directory gets ``report.md``, one CSV per table (``tables/<table>.csv``, the experiment in a
column) and the PNGs; stdout gets the tables in the chosen format (text, markdown, csv or json).
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from results import storage
from results.analysis import plots
from results.analysis.experiment import Experiment, load_experiment
from results.analysis.importance import importance
from p2m.atomic import atomic_write_bytes
from p2m.names import EPOCH, POPULATION_SCHEDULERS, PREVIEWS_DIR, train_best_dir
from results.schema import LAST_OBJECTIVE, TRIAL_ID
from results.parquet import ResultsError
from results.analysis.tables import baselines_vs_best, comparison, cost_table, leaderboard, rung_table
from results.trials import pick_best
from results.runs import read_race
from results.analysis.verdict import Verdict, decide

FORMATS = ("text", "markdown", "csv", "json")


@dataclass
class Analysis:
    experiments: list[Experiment]
    tables: dict[str, pd.DataFrame]  # name -> table, every experiment's rows, an "experiment" column first
    warnings: list[str] = field(default_factory=list)  # what could not be computed, and why
    verdicts: list[Verdict] = field(default_factory=list)  # one per experiment: what the report opens with
    pictures: dict[str, Path] = field(default_factory=dict)
    report: Path | None = None
    published: str | None = None  # where the output was uploaded (one experiment on object storage, default out)


def analyze(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, top: int = 10,
            plots_too: bool = True) -> Analysis:
    """Read the experiments, build the tables, draw the pictures and write the report into ``out``
    (default: ``<experiment>/analysis``, or ``<parent>/comparison-<a>-<b>`` for several). One experiment on
    object storage is analysed in its local copy, and the output uploaded to its ``analysis/`` too.

    Raises:
        ResultsError: naming the path, for a missing, empty or unreadable experiment.
    """
    if not paths:
        raise ResultsError("no experiment directories given")
    experiments = [load_experiment(p) for p in paths]
    names = [e.name for e in experiments]
    if len(set(names)) < len(names):  # two searches of the same name: tell them apart by directory
        for e in experiments:
            e.name = f"{e.dir.parent.name}/{e.dir.name}"
    tables, warnings = build_tables(experiments, top)
    given_out = out is not None
    out = Path(out) if given_out else default_out(experiments)
    importance = tables["importance"]
    verdicts = [decide(e, importance[importance["experiment"] == e.name]) for e in experiments]
    tables["verdict_changes"] = _with_experiment(experiments, [v.changes for v in verdicts])
    tables["fidelity"] = _with_experiment(experiments, [v.fidelity for v in verdicts])
    analysis = Analysis(experiments, tables, warnings, verdicts)
    for name, table in tables.items():
        _write_text(out / "tables" / f"{name}.csv", table.to_csv(index=False))
    if plots_too:
        analysis.pictures = draw(experiments, tables, out)
    analysis.report = out / "report.md"
    _write_text(analysis.report, report_markdown(analysis, out))
    analysis.published = publish(out, experiments[0]) if len(experiments) == 1 and not given_out else None
    return analysis


def publish(out: Path, experiment: Experiment) -> str | None:
    """Upload ``out`` to ``<experiment>/analysis`` when the experiment lives on object storage; returns where."""
    if experiment.location is None:
        return None
    target = storage.join(experiment.location, out.name)
    storage.upload_dir(out, target)
    return str(target)


def build_tables(experiments: list[Experiment], top: int = 10) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Every table, and a warning for each importance evaluator that could not run on an experiment."""
    warnings: list[str] = []

    def importance_table(e: Experiment, epoch: int | None, label: str) -> pd.DataFrame:
        result = importance(e, epoch)
        warnings.extend(f"{e.name}: {label}: {name} could not run ({error})" for name, error in result.failures.items())
        return result.table

    per = {
        "leaderboard": lambda e: leaderboard(e, top),
        "baselines_vs_best": baselines_vs_best,
        "rungs": rung_table,
        "importance": lambda e: importance_table(e, None, "importance"),
        "importance_first_rung": lambda e: importance_table(e, (e.settings.rung_epochs() or [e.settings.max_t])[0],
                                                            "importance at the first rung"),
        "cost": cost_table,
    }
    tables = {"comparison": comparison(experiments)}
    for name, fn in per.items():
        tables[name] = _with_experiment(experiments, [fn(e) for e in experiments])
    return tables, warnings


def _with_experiment(experiments: list[Experiment], parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The experiments' tables stacked, each row led by its experiment's name."""
    parts = [p.assign(experiment=e.name) for e, p in zip(experiments, parts)]
    full = [p for p in parts if len(p)]
    table = pd.concat(full, ignore_index=True) if full else parts[0]
    return table[["experiment"] + [c for c in table.columns if c != "experiment"]]


def draw(experiments: list[Experiment], tables: dict[str, pd.DataFrame], out: Path) -> dict[str, Path]:
    pictures = {"learning_curves": plots.learning_curves(experiments, out / "learning_curves.png")}
    imp = tables["importance"]
    pictures["importance"] = plots.importance_bars(
        {e.name: imp[imp["experiment"] == e.name] for e in experiments}, out / "importance.png")
    for e in experiments:
        tag = "" if len(experiments) == 1 else f"_{_slug(e.name)}"
        pictures[f"parallel_coordinates{tag}"] = plots.parallel_coordinates(e, out / f"parallel_coordinates{tag}.png")
        pictures[f"stage_cd{tag}"] = plots.stage_cd(e, out / f"stage_cd{tag}.png")
        pictures[f"tradeoff{tag}"] = plots.tradeoff(e, out / f"tradeoff{tag}.png")
        if e.settings.scheduler in POPULATION_SCHEDULERS:
            pictures[f"weight_schedule{tag}"] = plots.weight_schedule(e, out / f"weight_schedule{tag}.png")
        if read_race(e.dir) is not None:
            pictures[f"race{tag}"] = plots.race_picture(e, out / f"race{tag}.png")
    pictures["anytime"] = plots.anytime_curves(experiments, out / "anytime.png")
    return pictures


def default_out(experiments: list[Experiment]) -> Path:
    if len(experiments) == 1:
        return experiments[0].dir / "analysis"
    return experiments[0].dir.parent / ("comparison-" + "-".join(_slug(e.dir.name) for e in experiments))


def format_tables(tables: dict[str, pd.DataFrame], fmt: str) -> str:
    """The tables for stdout: aligned text, markdown, CSV blocks (``# name`` before each) or one JSON object."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "json":
        return json.dumps({name: json.loads(t.to_json(orient="records", double_precision=15)) for name, t in tables.items()}, indent=1)
    blocks = []
    for name, table in tables.items():
        if fmt == "csv":
            blocks.append(f"# {name}\n{table.to_csv(index=False).rstrip()}")
        elif fmt == "markdown":
            blocks.append(f"### {name}\n\n{markdown_table(table)}")
        else:
            shown = table.copy()
            for col in shown.select_dtypes(exclude="number").columns:  # an absent name prints as blank, not NaN
                shown[col] = shown[col].astype(object).where(shown[col].notna(), "")
            body = shown.to_string(index=False, float_format=_fmt) if len(shown) else "(empty)"
            blocks.append(f"== {name} ==\n{body}")
    return "\n\n".join(blocks)


def summary_lines(analysis: Analysis) -> list[str]:
    """What a reader wants first: the verdict of each experiment, then its trial counts."""
    lines = [line for v in analysis.verdicts for line in v.lines]
    comp = analysis.tables["comparison"].set_index("experiment")
    vs = analysis.tables["baselines_vs_best"]
    for e in analysis.experiments:
        c = comp.loc[e.name]
        line = (f"{e.name}: {c['trials']} trials ({c['completed']} reached max_t={c['max_t']}, "
                f"{c['stopped_early']} stopped early, {c['errored']} errored, {c['unfinished']} unfinished)")
        if isinstance(c["best_trial"], str):
            line += f"; best {c['best_trial']} val CDx1000 {c['best_cd_x1000']:.3f}"
        lines.append(line)
        mine = vs[(vs["experiment"] == e.name) & (vs["stage"] == 3) & (vs["metric"] == "cd_x1000")]
        for _, r in mine.iterrows():
            lines.append(f"  vs baseline {r['baseline']} at epoch {r[EPOCH]}: stage-3 CD {r['baseline_value']:.3f} "
                         f"-> {r['best_value']:.3f} ({100 * r['change']:+.1f}%)")
        lines.extend(f"  partial: {note}" for note in e.notes)
    lines.extend(f"warning: {w}" for w in analysis.warnings)
    return lines


def report_markdown(analysis: Analysis, out: Path) -> str:
    t = analysis.tables
    names = ", ".join(e.name for e in analysis.experiments)
    md = [f"# p2m-search analysis: {names}", "",
          f"Written {time.strftime('%Y-%m-%d %H:%M %Z')} by `p2m results analyze` from "
          + ", ".join(f"`{e.dir}`" for e in analysis.experiments) + ".", ""]
    partial = [e for e in analysis.experiments if e.partial]
    if partial:
        md += ["> **Partial results.** " + " ".join(f"{e.name}: {'; '.join(e.notes)}." for e in partial), ""]
    md += _verdict_markdown(analysis)
    md += ["## Summary", "", *[f"- {line.strip()}" for line in summary_lines(analysis)[len(_verdict_lines(analysis)):]],
           "", "A trial's figures are those of its last epoch; the best trial is the one `p2m search train-best` "
           "retrains (lowest last stage-3 validation CD among trials that reached max_t). CD is x 1000, "
           "F-scores in percent. Every table is also in `tables/*.csv`; the appendix repeats them.", ""]
    appendix = ["## Appendix: tables", ""]
    if len(analysis.experiments) > 1:
        appendix += ["### Experiments side by side", "", markdown_table(t["comparison"]), "",
                     "`epochs_to_within_2pct`: trial-epochs spent when a finished trial first came within 2% of "
                     "the experiment's final best.", ""]
    appendix += ["### Leaderboard", "", markdown_table(t["leaderboard"]), "",
                 "### Baselines vs the best trial (validation, no interval)", "",
                 "Each metric at the same epoch for both (`change` = best / baseline - 1; `improved` says whether "
                 "that is better for the metric).", "",
                 markdown_table(t["baselines_vs_best"]) if len(t["baselines_vs_best"]) else "(no baseline trial)",
                 "", "### Fidelity: each epoch's ranking against the last", "", markdown_table(t["fidelity"]), "",
                 "### ASHA rungs", "", markdown_table(t["rungs"]), "",
                 "### Weight importance", "",
                 "Optuna's fANOVA and PED-ANOVA on an in-memory study of the trials that reached max_t "
                 "(their last stage-3 CD); the second table uses every trial at the first rung (more trials, an "
                 "earlier signal). Estimates from fewer than about 20 trials are rough.", "",
                 markdown_table(t["importance"]) if len(t["importance"]) else "(too few trials reached max_t)", "",
                 markdown_table(t["importance_first_rung"]) if len(t["importance_first_rung"]) else "", "",
                 "### Cost", "", markdown_table(t["cost"]), "",
                 "`no_stopping_*`: every trial that did not error run to max_t at its own mean epoch time.", ""]
    if analysis.pictures:
        md += ["## Pictures", ""]
        for name, path in analysis.pictures.items():
            md += [f"### {name.replace('_', ' ')}", "", f"![{name}]({_rel(path, out)})", ""]
    md += _previews(analysis, out)
    md += appendix
    return "\n".join(md) + "\n"


def _verdict_lines(analysis: Analysis) -> list[str]:
    return [line for v in analysis.verdicts for line in v.lines]


def _verdict_markdown(analysis: Analysis) -> list[str]:
    md = ["## Verdict", ""]
    for v in analysis.verdicts:
        decision, *rest = v.lines
        md += [f"**{decision}**", ""]
        md += [f"- {line.strip()}" for line in rest if line.startswith("  ") and not line.startswith("    ")
               and not line.strip().startswith("weights (rows")]
        if len(v.changes):
            md += ["", "Stage-3 changes, the best against each baseline (CD relative; F@tau and normal consistency "
                   "in points). The comparisons with intervals are one family: intervals at the Bonferroni level "
                   "(`source` gives it), verdicts by Holm's step-down (`p_holm`); `equivalent`: the whole interval "
                   "inside the equivalence margin:", "", markdown_table(v.changes)]
        if len(v.weights):
            md += ["", f"Weights of {v.experiment}, one table per configuration (rows: stage):", ""]
            for arm in v.weights.columns.get_level_values(0).unique():
                md += [f"*{arm}*", "", markdown_table(v.weights[arm].reset_index()), ""]
        md += [""]
    return md


def markdown_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "(empty)"
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _previews(analysis: Analysis, out: Path) -> list[str]:
    md = []
    for e in analysis.experiments:
        try:
            best = pick_best(e.trials)
        except ResultsError:
            continue
        images = e.previews(best[TRIAL_ID])
        retrained = sorted((e.dir / train_best_dir()).glob(f"seed*/{PREVIEWS_DIR}/*.png"))
        if not images and not retrained:
            md += [f"No previews of {e.name}'s best trial {best[TRIAL_ID]} were saved "
                   f"(trials write them to `{PREVIEWS_DIR}/<trial_id>/` when they reach max_t).", ""]
            continue
        md += [f"## Meshes of {e.name}'s best trial {best[TRIAL_ID]}", "",
               f"Input | stage 1 | stage 2 | stage 3 | ground truth, from the camera and turned 90°; "
               f"last val CDx1000 {1000 * best[LAST_OBJECTIVE]:.3f}.", ""]
        md += [f"![{p.stem}]({_rel(p, out)})" for p in images] + [""]
        if retrained:
            md += ["Retrained by `p2m search train-best` (test split):", ""]
            md += [f"![{p.stem}]({_rel(p, out)})" for p in retrained] + [""]
    return md


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return _fmt(float(value))
    return str(value)


def _rel(path: Path, out: Path) -> str:
    return Path(os.path.relpath(path, out)).as_posix()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
