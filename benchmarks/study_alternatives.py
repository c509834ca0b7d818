"""The alternatives a user weighs, in two small searches on the study's data:

1. ``alternatives``: a two-objective search (stage-3 CD and normal consistency, static weights, FIFO) with the
   seed reimplementation's loss as it ran (``seed``) and with every stage on (``seed_all_stages``), learned
   weighting (``learned``), the published and the uniform weights as baselines; the analysis draws the front.
2. ``pb2``: weight schedules, PB2 over the same space with the same number of trials and epochs, so at the
   same trial-epochs as the static search; the analysis draws the best trial's schedule.

    python benchmarks/study_alternatives.py               # about 30 min on 2 cores
    python benchmarks/study_alternatives.py --smoke-test  # minutes: the tiny profile, 2 epochs

The data is the first edition's fixed synthetic dataset (4 views, seed 11; made here when missing). The
search runs FIFO so that every trial reaches ``max_t``. Printed, and kept in ``--out`` with the tables and
the analysis: each baseline's last-epoch validation figures per stage, the learned weights epoch by epoch,
the front, and the trial ``train-best --pick`` would retrain for the rule below. One search of a few
epochs: a demonstration that each alternative runs and lands in the tables, not a verdict on which is
better (that is the study's, with retrained seeds and intervals).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import optuna
import pandas as pd
from _study import EVIDENCE, copy_tables, run, search_config, synth_data, write_verdict

from p2m.names import STAGES, TRIALS_FILE, WEIGHTS, learned_column, val_column
from results.analysis.pareto import front, pick_on_front
from results.schema import BASELINE, LAST_OBJECTIVE, TRIAL_ID
from results.parquet import read_results, read_trials
from search.optuna_adapter import STUDY_NAME, optuna_storage

OBJECTIVES = {val_column(3, "cd"): "min", val_column(3, "normal_consistency"): "max"}
RULE = "min val_s3_cd where val_s3_normal_consistency >= published"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/p2m-study", help="data and experiments (checkpoints: large)")
    parser.add_argument("--out", default=str(EVIDENCE / "alternatives"), help="the Parquet tables, analysis, verdict")
    parser.add_argument("--trials", type=int, default=8, help="trials, the 5 baselines included")
    parser.add_argument("--max-t", type=int, default=4, help="epochs per trial")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    profile, trials, max_t, models = "cpu", args.trials, args.max_t, 16
    if args.smoke_test:
        profile, trials, max_t, models = "tiny", 6, 2, 3
        work, out = work / "smoke", work / "smoke" / "alternatives"
    data = synth_data(work / "data", models, views=4, seed=11)  # the first edition's dataset
    searches = {
        "alternatives": ({"num_samples": trials, "max_concurrent": 2, "seed": 0, "objectives": list(OBJECTIVES)},
                         {"published": {}, "uniform": {"loss.w1_laplacian": 0.5}, "seed": {}, "seed_all_stages": {},
                          "learned": {}},
                         {"type": "fifo", "max_t": max_t}),
        "pb2": ({"num_samples": trials, "max_concurrent": 2, "seed": 0}, {"published": {}},
                {"type": "pb2", "max_t": max_t, "perturbation_interval": 1}),
    }
    for name, (search, baselines, scheduler) in searches.items():
        exp = work / "experiments" / name
        if not (exp / TRIALS_FILE).is_file():
            shutil.rmtree(exp, ignore_errors=True)
            path = search_config(work / f"{name}.yaml", name, work / "experiments",
                                 {"profile": profile, "data": {"root": str(data)}}, search, scheduler, baselines)
            run(["p2m", "search", "launch", "--config", str(path), "--quiet"])
        shutil.rmtree(out / name, ignore_errors=True)  # no part of an earlier run left beside this one's
        copy_tables(exp, out / name)
        run(["p2m", "results", "analyze", str(out / name), "--out", str(out / name / "analysis"), "--format",
             "markdown"])
    return report(out, work / "experiments")


def report(out: Path, experiments: Path) -> int:
    trials, rows = read_trials(out / "alternatives"), read_results(out / "alternatives")
    table = front(trials, OBJECTIVES, tuple(val_column(s, m) for s in STAGES for m in ("cd", "normal_consistency")))
    lines = ["last epoch, validation (CD x 1000; NC = normal consistency), per trial:",
             f"{'trial':>10} {'baseline':>16} {'CD s1':>7} {'CD s2':>7} {'CD s3':>7} {'NC s3':>6} front"]
    for _, r in table.sort_values(val_column(3, "cd")).iterrows():
        cds = " ".join(f"{1000 * r[val_column(s, 'cd')]:7.3f}" for s in STAGES)
        lines.append(f"{r[TRIAL_ID]:>10} {r[BASELINE] if isinstance(r[BASELINE], str) else '-':>16} {cds} "
                     f"{r[val_column(3, 'normal_consistency')]:6.3f} {'yes' if r['on_front'] else ''}")
    learned = rows[rows[BASELINE] == "learned"].sort_values("training_iteration")
    lines.append("learned weighting, the chamfer weight of each stage at the end of each epoch (starts at 1):")
    for _, r in learned.iterrows():
        lines.append(f"  epoch {int(r['training_iteration'])}: "
                     + ", ".join(f"stage {s} {r[learned_column(s)]:.3f}" for s in STAGES))
    picked = pick_on_front(trials, RULE, OBJECTIVES)
    lines.append(f"train-best --pick \"{RULE}\" would retrain {picked[TRIAL_ID]}"
                 f"{' (' + picked[BASELINE] + ')' if isinstance(picked[BASELINE], str) else ''}")
    study = optuna.load_study(study_name=STUDY_NAME, storage=optuna_storage(experiments / "alternatives"))
    lines.append(f"the Optuna study ({len(study.directions)} objectives) holds {len(study.trials)} of the {len(trials)} "
                 "trials: the baselines outside the space ran beside it")
    pb2, pb2_rows = read_trials(out / "pb2"), read_results(out / "pb2")
    lines.append(f"at equal trial-epochs ({len(rows)} static, {len(pb2_rows)} PB2), the lowest last-epoch val CD x 1000 "
                 "of a searched (non-baseline) trial:")
    for label, table in (("static (alternatives)", trials), ("PB2 schedules", pb2)):
        searched = table[table[BASELINE].isna() & (table["stop_reason"] == "completed")]
        best = searched.sort_values(LAST_OBJECTIVE).iloc[0]
        lines.append(f"  {label}: {1000 * best[LAST_OBJECTIVE]:.3f} ({best[TRIAL_ID]})")
    moved = pb2_rows.sort_values("training_iteration").groupby(TRIAL_ID)[[w.column for w in WEIGHTS]].nunique()
    lines.append(f"PB2 trials whose weights changed during training: {int((moved > 1).any(axis=1).sum())} of {len(pb2)}")
    return write_verdict(lines, out / "alternatives.txt")


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    sys.exit(main())
