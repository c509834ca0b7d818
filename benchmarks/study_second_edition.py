"""The study, second edition (issue 19): which of the alternatives should a user run, and what does it buy?

    python benchmarks/study_second_edition.py               # about 2 hours on 2 cores; resumable
    python benchmarks/study_second_edition.py --smoke-test  # minutes: the tiny profile, every step once

Everything runs on one fixed synthetic dataset (the fidelity study's: 576 models of 6 categories, 2 views, seed
11, split 70/15/15 by model) and is tested on a separate, larger set made with seed 12 (384 models, one view
each) and on the 25 real ShapeNet-P2M sample views. The steps, each skipped when its output is already in
``--work`` (so a killed run goes on where it stopped):

1. Fidelity: the FIFO + random search of ``study_fidelity.py`` (30 trials, full curves; its committed tables are
   reused, ``--fifo run`` runs it again); ``p2m results fidelity`` and ``replay`` on it. The study's ASHA takes
   the replayed setting that keeps the final winner in >= 90% of orderings at the fewest trial-epochs.
2. Searches at the same profile and budget (``max_t`` 6): ASHA + TPE with every baseline beside it, FIFO +
   multi-objective TPE (stage-3 CD and normal consistency), and PB2 weight schedules.
3. Arms, each retrained by ``p2m search train-best`` at the search's budget with ``--seeds`` seeds (two at a
   time, one thread each): ``published``, ``seed``, ``seed_all_stages``, ``uniform``, ``learned``, the best of
   ASHA + TPE, the best of FIFO + random, the best PB2 schedule, and the front's pick of the two-objective
   search (the lowest CD whose normal consistency is at least ``published``'s).
4. Every seed of every arm evaluated, view by view, on the test set and on the real views.
5. The statistic (:mod:`results.analysis.paired`): changes paired by seed and bootstrapped over seeds and test models,
   95% intervals, a verdict per goal; the cost of each arm in trial-hours, its search included, and the
   anytime curves of the searches. Tables, verdicts and pictures go to ``--out``.

A goal on a change is met when its whole 95% interval lies past the threshold, not met when the whole
interval lies short of it, and inconclusive otherwise. The best searched arm is chosen by its retrained
validation CD (never by the test set it is then judged on).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from _study import EVIDENCE, cpu_name, run, search_config, synth_data

from p2m.atomic import atomic_write_bytes
from p2m.names import (CHECKPOINT_DIR, CONFIG_PREFIX, OBJECTIVE, RESULTS_DIR, SETTINGS_FILE, SPACE_FILE, STAGES,
                       TRAIN_BEST_RESULTS_FILE, TRIALS_FILE, stage_key, train_best_dir, val_column)
from results.analysis.paired import model_matrix, paired_change
from results.schema import BASELINE, ITERATION, TRIAL_ID, WRITTEN_AT
from results.parquet import read_results, read_trials, write_table_atomic

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent.parent / "shared" / "fixtures" / "shapenet_p2m_sample"
RULE = "min val_s3_cd where val_s3_normal_consistency >= published"
BASELINES = {"published": {}, "seed": {}, "seed_all_stages": {}, "uniform": {"loss.w1_laplacian": 0.5},
             "learned": {}}
# arm: (experiment, train-best flags, its search counts towards its cost)
# (in the order they are retrained: the goals' comparisons first, so that a run cut short has them)
ARMS = {"published": ("asha_tpe", ["--baseline", "published"], False),
        "seed": ("asha_tpe", ["--baseline", "seed"], False),
        "asha_tpe": ("asha_tpe", [], True), "learned": ("asha_tpe", ["--baseline", "learned"], False),
        "fifo_random": ("fifo_random", [], True), "mo_pick": ("mo_tpe", ["--pick", RULE], True),
        "pb2": ("pb2", [], True), "seed_all_stages": ("asha_tpe", ["--baseline", "seed_all_stages"], False),
        "uniform": ("asha_tpe", ["--baseline", "uniform"], False)}
SEARCHED = ("asha_tpe", "fifo_random", "pb2", "mo_pick")
DATASETS = ("test", "real")
DONE = ".study-done"  # in an experiment: its search finished


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/p2m-study2e", help="data, experiments, checkpoints (large)")
    parser.add_argument("--out", default=str(EVIDENCE / "study2"), help="tables, verdicts and pictures (committed)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--asha-trials", type=int, default=20, help="ASHA + TPE trials, the 5 baselines included")
    parser.add_argument("--other-trials", type=int, default=8, help="trials of the PB2 and two-objective searches")
    parser.add_argument("--fifo", choices=("committed", "run"), default="committed",
                        help="reuse the fidelity study's FIFO + random search (benchmarks/evidence/fidelity) or run it")
    parser.add_argument("--sample", default=str(SAMPLE), help="the real ShapeNet-P2M views")
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="only the report, from what --out holds (the arms retrained so far)")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    size = {"profile": "cpu", "models": 96, "test_models": 64, "max_t": 6, "fifo_trials": 30,
            "optim": {"steps_per_epoch": 36, "lr_schedule": "constant", "ema_epochs": 1.0}}
    if args.smoke_test:
        work, out = work / "smoke", work / "smoke" / "out"
        size = {"profile": "tiny", "models": 3, "test_models": 2, "max_t": 2, "fifo_trials": 4, "optim": {}}
        args.fifo, args.seeds, args.asha_trials, args.other_trials = "run", 2, 7, 3
    out.mkdir(parents=True, exist_ok=True)
    copies = {name: out / "searches" / name for name in ("fifo_random", "asha_tpe", "mo_tpe", "pb2")}
    if args.report_only:
        return report(copies, read_views(out), read_setting(out / "fidelity"), args.fifo, out)
    data = synth_data(work / "data", size["models"], 2, seed=11)
    test = synth_data(work / "test", size["test_models"], 1, seed=12)
    base = {"profile": size["profile"], "data": {"root": str(data)}, "optim": size["optim"]}

    fifo = fifo_experiment(work, base, size, args.fifo)
    setting = fidelity(fifo, out / "fidelity")
    searches = {
        "asha_tpe": ({"num_samples": args.asha_trials, "algorithm": "tpe"}, BASELINES,
                     {"type": "asha", "grace_period": setting[0], "reduction_factor": setting[1]} if setting
                     else {"type": "fifo"}),
        "mo_tpe": ({"num_samples": args.other_trials, "algorithm": "tpe",
                    "objectives": [OBJECTIVE, val_column(3, "normal_consistency")]}, {"published": {}},
                   {"type": "fifo"}),
        "pb2": ({"num_samples": args.other_trials}, {"published": {}}, {"type": "pb2", "perturbation_interval": 2}),
    }
    for name, (search, baselines, scheduler) in searches.items():
        launch(work, name, base, {**search, "max_concurrent": 2, "seed": 0}, baselines,
               {**scheduler, "max_t": size["max_t"]})
    experiments = {name: work / "experiments" / name for name in copies}
    for name, exp in experiments.items():
        copy_tables(exp, copies[name])

    retrain(experiments, args.seeds, out, work, test, Path(args.sample))
    return report(copies, read_views(out), setting, args.fifo, out)


def read_views(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path) for path in sorted((out / "views").glob("*.parquet"))], ignore_index=True)


def fifo_experiment(work: Path, base: dict, size: dict, how: str) -> Path:
    """The FIFO + random search with full curves: the fidelity study's committed tables (its data path made
    this study's), or a new run of the same search."""
    exp = work / "experiments" / "fifo_random"
    if (exp / DONE).is_file():
        return exp
    if how == "run":
        launch(work, "fifo_random", base, {"num_samples": size["fifo_trials"], "max_concurrent": 2, "seed": 1,
                                          "algorithm": "random"}, {"published": {}, "uniform": BASELINES["uniform"]},
               {"type": "fifo", "max_t": size["max_t"]})
        return exp
    committed = EVIDENCE / "fidelity" / "fifo_const_ema1"
    staging = exp.with_name(exp.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(committed, staging)
    column = CONFIG_PREFIX + "data.root"
    trials = pd.read_parquet(staging / TRIALS_FILE)
    trials[column] = base["data"]["root"]
    settings = yaml.safe_load((staging / SETTINGS_FILE).read_text())
    settings["base"]["data"]["root"] = base["data"]["root"]
    settings["storage_path"] = str(exp.parent)
    (staging / SETTINGS_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))
    (staging / TRIALS_FILE).unlink()
    write_table_atomic(pa.Table.from_pandas(trials, preserve_index=False), staging / TRIALS_FILE)
    (staging / DONE).touch()
    staging.rename(exp)
    return exp


def launch(work: Path, name: str, base: dict, search: dict, baselines: dict, scheduler: dict) -> None:
    exp = work / "experiments" / name
    if (exp / DONE).is_file():
        return
    if (exp / SETTINGS_FILE).is_file():  # a search a killed run left: resume it
        run(["p2m", "search", "resume", str(exp), "--quiet"])
        (exp / DONE).touch()
        return
    path = search_config(work / f"{name}.yaml", name, work / "experiments", base, search, scheduler, baselines)
    run(["p2m", "search", "launch", "--config", str(path), "--quiet"])
    (exp / DONE).touch()


def copy_tables(exp: Path, dest: Path) -> None:
    """An experiment's Parquet tables and settings (small; not its checkpoints)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(exp / RESULTS_DIR, dest / RESULTS_DIR)
    for name in (TRIALS_FILE, SETTINGS_FILE, SPACE_FILE):
        shutil.copy2(exp / name, dest / name)


def fidelity(fifo: Path, out: Path) -> tuple[int, float] | None:
    """Which rung predicts, and the ASHA setting to use: (grace period, reduction factor), or None for FIFO."""
    if not (out / "replay.csv").is_file():
        run(["p2m", "results", "fidelity", str(fifo), "--out", str(out)])
        run(["p2m", "results", "replay", str(fifo), "--graces", "1", "2", "3", "--factors", "2", "3", "4",
             "--out", str(out)])
    return read_setting(out)


def read_setting(out: Path) -> tuple[int, float] | None:
    table = pd.read_csv(out / "replay.csv")
    keep = table[(table["algorithm"] == "asha") & (table["winner_kept"] >= 0.9)]
    if keep.empty:
        print("no replayed ASHA setting keeps the winner in 90% of orderings: the study runs FIFO")
        return None
    best = keep.sort_values(["epochs_share", "grace_period"]).iloc[0]
    print(f"ASHA setting from the replay: grace {best['grace_period']}, reduction factor "
          f"{best['reduction_factor']} (winner kept {best['winner_kept']:.2f}, {best['epochs_share']:.2f} of "
          f"FIFO's trial-epochs)")
    return int(best["grace_period"]), float(best["reduction_factor"])


def arm_dir(experiments: dict[str, Path], arm: str) -> Path:
    exp, flags, _ = ARMS[arm]
    return experiments[exp] / train_best_dir(flags[1] if flags[:1] == ["--baseline"] else None)


def retrain(experiments: dict[str, Path], seeds: int, out: Path, work: Path, test: Path, sample: Path) -> None:
    """Every arm by train-best, two at a time with one thread each, then evaluated; kept in ``out``: the
    retrained seeds' rows (``retrained/ARM.parquet``), their views' (``views/ARM.parquet``) and the wall time
    (``retrain_seconds.json``, its trial-hours). An arm with all three is not run again."""
    costs_file = out / "retrain_seconds.json"
    costs = json.loads(costs_file.read_text()) if costs_file.is_file() else {}
    todo = [arm for arm in ARMS if not (out / "views" / f"{arm}.parquet").is_file() or arm not in costs]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    exe = Path(sys.executable).parent / "p2m"

    def one(arm: str) -> None:
        exp, flags, _ = ARMS[arm]
        cmd = [str(exe), "search", "train-best", str(experiments[exp]), "--seeds", str(seeds), "--previews", "2",
               "--no-progress", *flags]
        print(f"$ {' '.join(cmd[1:])}   [{arm}]", flush=True)
        start = time.perf_counter()
        with open(work / f"train-best-{arm}.log", "w") as log:
            subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        (out / "retrained").mkdir(exist_ok=True)
        shutil.copy2(arm_dir(experiments, arm) / TRAIN_BEST_RESULTS_FILE, out / "retrained" / f"{arm}.parquet")
        evaluate_arm(experiments, arm, test, sample, out)
        costs[arm] = seconds
        print(f"  {arm}: retrained in {seconds / 60:.1f} min, evaluated", flush=True)
        costs_file.write_text(json.dumps(costs, indent=1) + "\n")

    import torch

    torch.set_num_threads(1)  # the evaluations share the machine with the other arm's training
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, todo))


def evaluate_arm(experiments: dict[str, Path], arm: str, test: Path, sample: Path, out: Path) -> None:
    """One row per seed, dataset and view of ``arm``: every stage's metrics (``views/ARM.parquet`` in ``out``)."""
    import torch
    from torch.utils.data import DataLoader

    from p2m.checkpoint import load_model
    from p2m.data.dataset import P2MDataset, collate_p2m
    from p2m.data.layout import find_samples
    from p2m.evaluate import evaluate

    rows = []
    results = pd.read_parquet(arm_dir(experiments, arm) / TRAIN_BEST_RESULTS_FILE)
    for k, seed in enumerate(results["seed"]):
        model, cfg = load_model(arm_dir(experiments, arm) / f"seed{k}" / CHECKPOINT_DIR, torch.device("cpu"))
        for dataset, root in (("test", test), ("real", sample)):
            loader = DataLoader(P2MDataset(find_samples(root), cfg.data.gt_samples, cfg.data.image_size),
                                batch_size=8, collate_fn=collate_p2m)
            ev = evaluate(model, loader, torch.device("cpu"))
            rows += [{"arm": arm, "seed": int(seed), "seed_index": k, "dataset": dataset, **item} for item in ev.items]
    (out / "views").mkdir(exist_ok=True)
    write_table_atomic(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), out / "views" / f"{arm}.parquet")


# ---------------------------------------------------------------------------------------------- the report


def verdict(low: float, high: float, threshold: float, lower_is_better: bool) -> str:
    """met: the whole interval past the threshold; not met: the whole interval short of it."""
    if lower_is_better:
        return "met" if high <= threshold else "NOT met" if low > threshold else "inconclusive"
    return "met" if low >= threshold else "NOT met" if high < threshold else "inconclusive"


def matrix(views: pd.DataFrame, arm: str, dataset: str, column: str) -> np.ndarray:
    """seed x model means, seeds by their index (seed k of one arm is paired with seed k of another)."""
    rows = views[(views["arm"] == arm) & (views["dataset"] == dataset)]
    return model_matrix(rows.assign(seed=rows["seed_index"]), column)[0]


def change(views: pd.DataFrame, arm: str, base: str, dataset: str, metric: str, stage: int = 3) -> tuple:
    column = stage_key(stage, metric)
    return paired_change(matrix(views, arm, dataset, column), matrix(views, base, dataset, column),
                         relative=metric == "cd_x1000")


def report(experiments: dict[str, Path], views: pd.DataFrame, setting, fifo_how: str, out: Path) -> int:
    """The verdicts on the arms retrained so far (``experiments``: the searches' tables as copied into ``out``)."""
    arms = arm_table(experiments, views, out)
    present = list(arms.index)
    searched = [arm for arm in SEARCHED if arm in present]
    missing = [arm for arm in ARMS if arm not in present]
    best = arms.loc[searched, "val_cd_x1000"].idxmin() if searched else None
    lines = [f"machine: {cpu_name()}, {os.cpu_count()} cores; {len(views['seed_index'].unique())} seeds per arm; "
             f"test set {views[views['dataset'] == 'test'][['synset', 'model_id']].drop_duplicates().shape[0]} "
             f"models, real sample {views[views['dataset'] == 'real'][['synset', 'model_id']].drop_duplicates().shape[0]}"
             " models; 95% intervals, paired by seed, bootstrapped over seeds and test models",
             "", "arms (mean over seeds; CD x 1000; the trial retrained, with its baseline's name if it is one; "
             "trial-hours: the retraining and, for a searched arm, its search's trials):",
             arms.round(3).to_string(), "",
             f"best searched arm by retrained validation CD: {best}", ""]
    if missing:
        lines[-1:-1] = [f"NOT YET RETRAINED (a partial report; run the script again to go on): {', '.join(missing)}"]
    comparisons = []
    for arm in present:
        for base in ("published", "seed", "learned"):
            if arm == base or base not in present:
                continue
            for dataset in DATASETS:
                for metric in ("cd_x1000", "f_tau"):
                    c, lo, hi = change(views, arm, base, dataset, metric)
                    comparisons.append({"arm": arm, "against": base, "dataset": dataset, "metric": metric,
                                        "change": c, "low": lo, "high": hi})
    comp = pd.DataFrame(comparisons)
    write_csv(comp, out / "comparisons.csv")

    def get(arm, base, dataset, metric):
        rows = comp[(comp["arm"] == arm) & (comp["against"] == base) & (comp["dataset"] == dataset)
                    & (comp["metric"] == metric)] if len(comp) else comp
        return rows.iloc[0] if len(rows) else None

    def show(row, scale=100, unit="%"):
        return f"{scale * row['change']:+.1f}{unit} [{scale * row['low']:+.1f}, {scale * row['high']:+.1f}]"

    q1a = get(best, "seed", "test", "cd_x1000")
    lines.append(f"Q1a  {best} vs seed, test CD: {show(q1a)} (goal <= -30%) -> "
                 f"{verdict(q1a['low'], q1a['high'], -0.30, True)}" if q1a is not None else "Q1a  not yet retrained")
    q1b = []
    for arm in searched:
        cd, f = get(arm, "published", "test", "cd_x1000"), get(arm, "published", "test", "f_tau")
        if cd is None:
            continue
        v = (verdict(cd["low"], cd["high"], -0.10, True), verdict(f["low"], f["high"], 5.0, False))
        q1b.append(v)
        lines.append(f"Q1b  {arm} vs published, test: CD {show(cd)} (goal <= -10%) -> {v[0]}; F@tau "
                     f"{show(f, 1, ' pts')} (goal >= +5) -> {v[1]}")
    flat = [x for v in q1b for x in v]
    overall = "met" if "met" in flat else "NOT met" if all(x == "NOT met" for x in flat) else "inconclusive"
    reached = [arm for arm, v in zip(searched, q1b) if "met" in v]
    if len(searched) < len(SEARCHED) and overall != "met":
        overall += f" so far ({len(searched)} of {len(SEARCHED)} searched arms retrained)"
    lines.append(f"Q1b  overall -> {overall if q1b else 'not yet retrained'}"
                 + (f" ({', '.join(reached)})" if reached else " (no arm gets there)"))
    q1c = get(best, "learned", "test", "cd_x1000")
    lines.append(f"Q1c  {best} vs learned, test CD: {show(q1c)} (goal < 0) -> "
                 f"{verdict(q1c['low'], q1c['high'], 0.0, True)}" if q1c is not None else "Q1c  not yet retrained")
    lines += stage_order(views, present, out)
    lines += asha_replay(experiments["fifo_random"], setting, out)
    if fifo_how == "committed":
        lines.append("(fifo_random: the fidelity study's search, run at commit 27cd732 before the training-step "
                     "speed-ups; its trial-hours are those it took then)")
    anytime_picture(experiments, out / "anytime.png")
    arms_picture(arms, comp, out / "arms.png")
    text = "\n".join(lines)
    print(text)
    (out / "verdict.txt").write_text(text + "\n")
    return 0


def arm_table(experiments: dict[str, Path], views: pd.DataFrame, out: Path) -> pd.DataFrame:
    costs = json.loads((out / "retrain_seconds.json").read_text())
    rows = []
    for arm, (exp, _, searched) in ARMS.items():
        if arm not in costs or arm not in set(views["arm"]) or not (out / "retrained" / f"{arm}.parquet").is_file():
            continue
        retrained = pd.read_parquet(out / "retrained" / f"{arm}.parquet")
        search_hours = search_cost(experiments[exp])[0] if searched else 0.0
        trials = read_trials(experiments[exp]).set_index(TRIAL_ID)
        trial = str(retrained[TRIAL_ID].iloc[0])
        named = trials.loc[trial, BASELINE] if BASELINE in trials else None
        row = {"arm": arm, "trial": trial + (f" ({named})" if isinstance(named, str) else ""),
               "val_cd_x1000": 1000 * retrained[OBJECTIVE].mean(), "val_sd": 1000 * retrained[OBJECTIVE].std(ddof=1)}
        for dataset in DATASETS:
            sub = views[(views["arm"] == arm) & (views["dataset"] == dataset)]
            per_seed = sub.groupby("seed_index")[[stage_key(s, "cd_x1000") for s in STAGES] + [stage_key(3, "f_tau")]].mean()
            row.update({f"{dataset}_cd_s{s}": per_seed[stage_key(s, "cd_x1000")].mean() for s in STAGES})
            row[f"{dataset}_f_tau"] = per_seed[stage_key(3, "f_tau")].mean()
        row.update({"search_hours": search_hours, "retrain_hours": costs[arm] / 3600,
                    "trial_hours": search_hours + costs[arm] / 3600,
                    "search_trial_epochs": search_cost(experiments[exp])[1] if searched else 0})
        rows.append(row)
    table = pd.DataFrame(rows).set_index("arm")
    write_csv(table.reset_index(), out / "arms.csv")
    return table


def search_cost(exp: Path) -> tuple[float, int]:
    """(trial-hours, trial-epochs) of a search: the seconds of every epoch a searched trial trained (the
    baselines beside it are the study's, not the search's)."""
    rows = searched_rows(exp)
    return float(rows["time_this_iter_s"].sum()) / 3600, len(rows)


def searched_rows(exp: Path) -> pd.DataFrame:
    """The result rows of a search's own trials, in the order they were written (not its baselines')."""
    rows = read_results(exp)
    return rows[rows[BASELINE].isna()].sort_values(WRITTEN_AT, kind="stable")


def stage_order(views: pd.DataFrame, arms: list[str], out: Path) -> list[str]:
    """Q2: stage-3 CD < stage-2 < stage-1, as paired changes over seeds and models, for every arm but seed."""
    rows, lines = [], []
    for arm in arms:
        for dataset in DATASETS:
            for upper, lower in ((3, 2), (2, 1)):
                c, lo, hi = paired_change(matrix(views, arm, dataset, stage_key(upper, "cd_x1000")),
                                          matrix(views, arm, dataset, stage_key(lower, "cd_x1000")), relative=True)
                rows.append({"arm": arm, "dataset": dataset, "stage": upper, "against_stage": lower,
                             "change": c, "low": lo, "high": hi, "verdict": verdict(lo, hi, 0.0, True)})
    table = pd.DataFrame(rows)
    write_csv(table, out / "stage_order.csv")
    judged = table[table["arm"] != "seed"]
    overall = ("met" if (judged["verdict"] == "met").all() else
               "NOT met" if (judged["verdict"] == "NOT met").any() else "inconclusive")
    for (arm, dataset), sub in judged.groupby(["arm", "dataset"], sort=False):
        parts = [f"s{r.stage}/s{r.against_stage} {100 * r.change:+.0f}% [{100 * r.low:+.0f}, {100 * r.high:+.0f}]"
                 for r in sub.itertuples()]
        if (sub["verdict"] != "met").any():
            lines.append(f"     {arm} on {dataset}: {'; '.join(parts)}")
    worst = judged.loc[judged["high"].idxmax()]
    return [f"Q2   stage-3 CD < stage-2 < stage-1 for every arm but seed, test and real: "
            f"{int((judged['verdict'] == 'met').sum())} of {len(judged)} steps met (the weakest: {worst['arm']} on "
            f"{worst['dataset']}, s{worst['stage']}/s{worst['against_stage']} {100 * worst['change']:+.0f}% "
            f"[{100 * worst['low']:+.0f}, {100 * worst['high']:+.0f}]) -> {overall}", *lines]


def asha_replay(fifo: Path, setting, out: Path, boot: int = 200, orderings: int = 40) -> list[str]:
    """P3: the replayed ASHA settings' share of FIFO's trial-epochs and how often they keep the final winner,
    with 95% intervals from resampling the FIFO search's trials (its curves) with replacement."""
    from results.analysis.fidelity import full_curves

    curves = full_curves(read_results(fifo), int(yaml.safe_load((fifo / SETTINGS_FILE).read_text())["max_t"]))
    key = ["grace_period", "reduction_factor"]
    cached = out / "asha_replay.csv"
    if cached.is_file():  # the FIFO curves do not change: the bootstrap (minutes) runs once
        table = pd.read_csv(cached).set_index(key)
    else:
        table = _replay_intervals(curves, boot, orderings)
        write_csv(table.reset_index(), cached)
    ok = table[(table["kept_low"] >= 0.9) & (table["share_high"] <= 0.4)]
    no = table[(table["kept_high"] < 0.9) | (table["share_low"] > 0.4)]
    overall = "met" if len(ok) else "NOT met" if len(no) == len(table) else "inconclusive"
    lines = [f"P3   ASHA keeps the final winner in >= 90% of replayed orderings at <= 0.4 of FIFO's trial-epochs "
             f"({len(curves)} FIFO curves, {orderings} orderings, {boot} resamples of the trials) -> {overall}"]
    for (g, rf), r in table.iterrows():
        lines.append(f"     grace {g}, factor {rf:g}: {r['epochs_share']:.2f} [{r['share_low']:.2f}, "
                     f"{r['share_high']:.2f}] of the epochs, winner kept {r['winner_kept']:.2f} "
                     f"[{r['kept_low']:.2f}, {r['kept_high']:.2f}]" + ("   <- the study's ASHA" if setting and
                                                                        (g, rf) == tuple(setting) else ""))
    return lines


def _replay_intervals(curves: pd.DataFrame, boot: int, orderings: int) -> pd.DataFrame:
    """Each ASHA setting's epochs share and winner kept, and their 95% intervals over resampled trials."""
    from results.analysis.replay import replay

    settings = dict(graces=[1, 2, 3], factors=[2.0, 3.0, 4.0], orderings=orderings, algorithms=("asha",))
    point = replay(curves, **settings)
    rng = np.random.default_rng(0)
    draws = pd.concat([replay(curves.iloc[rng.integers(0, len(curves), len(curves))].reset_index(drop=True),
                              seed=b, **settings) for b in range(boot)])
    key = ["grace_period", "reduction_factor"]
    groups = draws.groupby(key)
    table = point.set_index(key)[["epochs_share", "winner_kept"]]
    for column, short in (("epochs_share", "share"), ("winner_kept", "kept")):
        table[f"{short}_low"], table[f"{short}_high"] = groups[column].quantile(0.025), groups[column].quantile(0.975)
    return table


def anytime_picture(experiments: dict[str, Path], path: Path) -> None:
    """Each search's best validation CD at max_t so far against the trial-hours it had spent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.2), constrained_layout=True)
    for name, exp in experiments.items():
        rows = searched_rows(exp)
        max_t = int(rows[ITERATION].max())
        final = rows[OBJECTIVE].where(rows[ITERATION] >= max_t) * 1000
        ax.step(rows["time_this_iter_s"].cumsum() / 3600, final.cummin().ffill(), where="post", lw=1.8, label=name)
    ax.set(xlabel="trial-hours spent (the searched trials' epochs)",
           ylabel="best val CD x 1000 at max_t so far", title="what each search had found, against its compute")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def arms_picture(arms: pd.DataFrame, comp: pd.DataFrame, path: Path) -> None:
    """Each arm's test CD change against published, with its 95% interval, and its cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = comp[(comp["against"] == "published") & (comp["metric"] == "cd_x1000")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True, sharey=True)
    for ax, dataset in zip(axes, DATASETS):
        sub = rows[rows["dataset"] == dataset].reset_index(drop=True)
        y = np.arange(len(sub))
        ratio, low, high = 1 + sub["change"], 1 + sub["low"], 1 + sub["high"]
        ax.errorbar(ratio, y, xerr=[ratio - low, high - ratio], fmt="o", capsize=3)
        ax.axvline(1, color="0.5", lw=1)
        ax.axvline(0.9, color="tab:red", ls="--", lw=1, label="Q1b goal (10% lower)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on a short span
        ax.set_yticks(y, [f"{a} ({arms.loc[a, 'trial_hours']:.1f} h)" for a in sub["arm"]])
        ax.set(xlabel="stage-3 CD / published's (log scale; 95% interval)", title=f"{dataset} views")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_csv(table: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, table.to_csv(index=False).encode())


if __name__ == "__main__":
    sys.exit(main())
