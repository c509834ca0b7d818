"""Can an early ASHA rung trust its ranking? The learning-rate schedule and validation chosen by measurement.

    python benchmarks/study_fidelity.py [--work /tmp/p2m-fid2] [--trials 30]   # about 40 min on 2 cores

A FIFO + random search records the full curves of ``--trials`` trials (6 epochs of 36 steps of 8 views, the
``cpu`` profile) on a fixed synthetic dataset made here: 576 models of 6 categories, 2 views each, split
70/15/15 by model, so that every trial validates on the same 168 views of 84 models. The schedule under
test: a constant learning rate after warm-up, validated on a bias-corrected average of the weights over one
epoch (``optim.lr_schedule: constant``, ``optim.ema_epochs: 1``). ``p2m results fidelity`` then gives
each epoch's rank correlation with the last, and ``p2m results replay`` what ASHA, asynchronous Hyperband
and successive halving would have done with those curves; the old schedule's figures (cosine decay over
the trial's horizon, 48 validation views) come from the first study's FIFO search, committed in
``benchmarks/evidence/study/fifo_random``. The experiment's tables are copied into ``--out``; a search already
in ``--work`` is not run again.

Goal (issue 15): the grace rung's Spearman correlation with the final epoch has a bootstrap 95% lower
bound >= 0.5.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd
from _study import EVIDENCE, met, run, search_config, write_verdict

from p2m.names import EPOCH, RESULTS_DIR, SETTINGS_FILE, SPACE_FILE, SYNTH_META_FILE, TRIALS_FILE

NAME = "fifo_const_ema1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/p2m-fid2", help="data and experiment (checkpoints: large)")
    parser.add_argument("--out", default=str(EVIDENCE / "fidelity"))
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    data = work.parent / "p2m-study2" / "data" if work.name == "p2m-fid2" else work / "data"
    if not (data / SYNTH_META_FILE).is_file():
        run(["p2m", "data", "synth", "--out", str(data), "--models-per-category", "96", "--views", "2",
             "--seed", "11"])
    exp = work / "experiments" / NAME
    if not (exp / TRIALS_FILE).is_file():
        shutil.rmtree(exp, ignore_errors=True)
        run(["p2m", "search", "launch", "--config", str(write_config(work / f"{NAME}.yaml", data, work, args.trials)),
             "--quiet"])
    copy = out / NAME
    shutil.copytree(exp / RESULTS_DIR, copy / RESULTS_DIR, dirs_exist_ok=True)
    for name in (TRIALS_FILE, SETTINGS_FILE, SPACE_FILE):
        shutil.copy2(exp / name, copy / name)
    old = EVIDENCE / "study" / "fifo_random"
    run(["p2m", "results", "fidelity", str(old), "--out", str(out / "old_schedule")])
    # the work copy has the per-view rows too (5 MB, not copied): fidelity also says how reproducible the
    # validation's ranking is
    run(["p2m", "results", "fidelity", str(exp), "--out", str(out / "new_schedule")])
    run(["p2m", "results", "replay", str(copy), "--graces", "1", "2", "3", "4", "--factors", "2", "3", "4",
         "--out", str(out / "new_schedule")])
    return verdict(out)


def write_config(path: Path, data: Path, work: Path, trials: int) -> Path:
    return search_config(
        path, NAME, work / "experiments",
        {"profile": "cpu", "data": {"root": str(data)},
         "optim": {"steps_per_epoch": 36, "lr_schedule": "constant", "ema_epochs": 1.0}},
        {"num_samples": trials, "max_concurrent": 2, "seed": 1, "algorithm": "random", "val_per_view": True},
        {"type": "fifo", "max_t": 6}, {"published": {}, "uniform": {"loss.w1_laplacian": 0.5}})


def verdict(out: Path) -> int:
    old = pd.read_csv(out / "old_schedule" / "fidelity.csv").set_index(EPOCH)
    new = pd.read_csv(out / "new_schedule" / "fidelity.csv").set_index(EPOCH)
    grace = next((int(e) for e, row in new.iterrows() if row["spearman_low"] >= 0.5), None)
    lines = [f"Spearman with the last epoch, 95% interval (old: cosine, {int(old['trials'].iloc[0])} trials; "
             f"new: constant + EMA, {int(new['trials'].iloc[0])} trials):"]
    for epoch in new.index:
        o, n = old.loc[epoch], new.loc[epoch]
        lines.append(f"  epoch {epoch}: old {o['spearman']:+.2f} [{o['spearman_low']:+.2f}, {o['spearman_high']:+.2f}]"
                     f"   new {n['spearman']:+.2f} [{n['spearman_low']:+.2f}, {n['spearman_high']:+.2f}]")
    lines.append(f"earliest grace rung with a lower bound >= 0.5, new schedule: {grace} -> "
                 f"{met(grace is not None)}")
    return write_verdict(lines, out / "verdict_fidelity.txt")


if __name__ == "__main__":
    raise SystemExit(main())
