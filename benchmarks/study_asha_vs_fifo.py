"""Study question 1: does ASHA + TPE find as good a configuration as FIFO + random search, for less compute?

Both searches run on the same fixed synthetic dataset (made here with a fixed seed when missing), with the
same number of trials, the same seed, the same baselines and the ``cpu`` profile; only the scheduler and the
search algorithm differ. Afterwards ``p2m results analyze`` compares them side by side and the Parquet
tables of both experiments are copied into ``--out`` (checkpoints stay in ``--work``).

    python benchmarks/study_asha_vs_fifo.py            # about 45 min on 2 cores
    python benchmarks/study_asha_vs_fifo.py --smoke-test  # seconds: the tiny profile, 3 trials, 2 epochs

Goal: the same best validation CD (within 2%) with at most 1/3 of the trial-epochs.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd
import yaml
from _study import met, run, write_verdict

from p2m.names import PREVIEWS_DIR, RESULTS_DIR, SETTINGS_FILE, SPACE_FILE, SYNTH_META_FILE, TRAIN_BEST_DIR, TRIALS_FILE
from results.store import read_trials
from results.trials import pick_best

HERE = Path(__file__).resolve().parent
SEARCHES = {"asha_tpe": ("asha", "tpe"), "fifo_random": ("fifo", "random")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/p2m-study", help="data and experiments (checkpoints: large)")
    parser.add_argument("--out", default=str(HERE / "study"), help="the Parquet tables, analysis and report")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--max-t", type=int, default=6, help="epochs per trial")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    profile, trials, max_t, models = ("cpu", args.trials, args.max_t, 16)
    if args.smoke_test:
        profile, trials, max_t, models = "tiny", 3, 2, 3
        work = work / "smoke"
        out = work / "out"
    data = make_data(work / "data", models)
    experiments = []
    for name, (scheduler, algorithm) in SEARCHES.items():
        exp = work / "experiments" / name
        if not (exp / TRIALS_FILE).is_file():
            shutil.rmtree(exp, ignore_errors=True)
            cfg = write_config(work / f"{name}.yaml", name, data, work / "experiments", profile, trials, max_t,
                               scheduler, algorithm)
            run(["p2m", "search", "launch", "--config", str(cfg), "--quiet"])
        copy_tables(exp, out / name)
        experiments.append(out / name)
    # the analysis reads the copies, so the report's links stay inside --out
    run(["p2m", "results", "analyze", *map(str, experiments), "--out", str(out / "analysis"), "--format",
         "markdown"])
    return verdict(pd.read_csv(out / "analysis" / "tables" / "comparison.csv"), out)


def make_data(path: Path, models: int) -> Path:
    if not (path / SYNTH_META_FILE).is_file():
        run(["p2m", "data", "synth", "--out", str(path), "--models-per-category", str(models), "--views", "4",
             "--seed", "11"])
    return path


def write_config(path: Path, name: str, data: Path, storage: Path, profile: str, trials: int, max_t: int,
                 scheduler: str, algorithm: str) -> Path:
    cfg = {
        "name": name,
        "base": {"profile": profile, "data": {"root": str(data)}},
        "search": {"num_samples": trials, "max_concurrent": 2, "seed": 0, "algorithm": algorithm},
        "baselines": {"published": {}, "uniform": {"loss.w1_laplacian": 0.5}},
        "scheduler": {"type": scheduler, "max_t": max_t, "grace_period": 1, "reduction_factor": 3},
        "resources": {"cpu": 1, "gpu": 0},
        "failure": {"max_failures": 1},
        "storage": {"path": str(storage)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def copy_tables(exp: Path, dest: Path) -> None:
    """The experiment's Parquet tables, settings and preview PNGs (small), not its checkpoints or meshes;
    also train-best's results and previews when ``study_best_vs_published.py`` has run."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(exp / RESULTS_DIR, dest / RESULTS_DIR, dirs_exist_ok=True)
    for name in (TRIALS_FILE, SETTINGS_FILE, SPACE_FILE):
        shutil.copy2(exp / name, dest / name)
    best = pick_best(read_trials(exp))["trial_id"]  # the only trial whose previews the report shows
    for png in [*exp.glob(f"{PREVIEWS_DIR}/{best}/{PREVIEWS_DIR}/*.png"),
                *exp.glob(f"{TRAIN_BEST_DIR}*/seed*/{PREVIEWS_DIR}/*.png"),
                *exp.glob(f"{TRAIN_BEST_DIR}*/results.parquet")]:
        target = dest / png.relative_to(exp)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, target)


def verdict(comp: pd.DataFrame, out: Path) -> int:
    comp = comp.set_index("experiment")
    a, f = comp.loc["asha_tpe"], comp.loc["fifo_random"]
    cd_gap = a["best_cd_x1000"] / f["best_cd_x1000"] - 1
    epochs = a["trial_epochs"] / f["trial_epochs"]
    lines = [
        f"ASHA + TPE:      best val CDx1000 {a['best_cd_x1000']:.3f} with {a['trial_epochs']} trial-epochs "
        f"({a['trial_hours']:.2f} trial-hours); within 2% after {a['epochs_to_within_2pct']} trial-epochs",
        f"FIFO + random:   best val CDx1000 {f['best_cd_x1000']:.3f} with {f['trial_epochs']} trial-epochs "
        f"({f['trial_hours']:.2f} trial-hours); within 2% after {f['epochs_to_within_2pct']} trial-epochs",
        f"best CD, ASHA vs FIFO: {100 * cd_gap:+.1f}% (goal: within +2%) -> {met(cd_gap <= 0.02)}",
        f"trial-epochs, ASHA / FIFO: {epochs:.2f} (goal <= 0.33) -> {met(epochs <= 1 / 3)}",
    ]
    return write_verdict(lines, out / "verdict_asha_vs_fifo.txt")


if __name__ == "__main__":
    sys.exit(main())
