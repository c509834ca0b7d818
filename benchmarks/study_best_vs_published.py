"""Study question 2: does the searched configuration beat the published weights on held-out data?

The best trial of the ASHA + TPE search (``study_asha_vs_fifo.py`` runs it) and its ``published`` baseline
are each retrained with ``p2m search train-best`` at the search's budget with 3 seeds, evaluated on the
synthetic test split (by train-best) and on the 25 real ShapeNet-P2M sample views (``p2m evaluate``). One row
per (config, seed, dataset, stage) goes to ``--out/best_vs_published.parquet``; the summary and the goal check
to ``verdict_best_vs_published.txt``. The seed paper's hand-tuned weights are not available to this project,
so that third arm is missing.

    python benchmarks/study_best_vs_published.py [--seeds 3] [--sample ../shared/fixtures/shapenet_p2m_sample]

Goal: >= 15% lower test CD and >= 5 F@tau points over the published weights; stage-3 CD < stage-2 < stage-1.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from _study import met, run, write_verdict

from p2m.names import CHECKPOINT_DIR, TRAIN_BEST_RESULTS_FILE, stage_key, train_best_dir

HERE = Path(__file__).resolve().parent
ARMS = {"searched": [], "published": ["--baseline", "published"]}
OUT_DIRS = {"searched": train_best_dir(), "published": train_best_dir("published")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="/tmp/p2m-study/experiments/asha_tpe")
    parser.add_argument("--out", default=str(HERE / "study"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sample", default=str(HERE.parent.parent / "shared" / "fixtures" / "shapenet_p2m_sample"))
    args = parser.parse_args()
    exp, out = Path(args.experiment), Path(args.out)
    rows = []
    for arm, flags in ARMS.items():
        results = exp / OUT_DIRS[arm] / TRAIN_BEST_RESULTS_FILE
        if not results.is_file():
            run(["p2m", "search", "train-best", str(exp), "--seeds", str(args.seeds), "--previews", "2",
                 "--no-progress", *flags])
        retrained = pd.read_parquet(results)
        for k, seed_row in retrained.iterrows():
            run_dir = exp / OUT_DIRS[arm] / f"seed{k}"
            real = evaluate(run_dir / CHECKPOINT_DIR, Path(args.sample))
            for stage in (1, 2, 3):
                for dataset, source, prefix in (("synthetic test", seed_row, "test_"), ("real sample", real, "")):
                    rows.append({"arm": arm, "trial_id": seed_row["trial_id"], "seed": int(seed_row["seed"]),
                                 "dataset": dataset, "stage": stage,
                                 **{m: float(source[f"{prefix}{stage_key(stage, m)}"])
                                    for m in ("cd_x1000", "f_tau", "f_2tau", "normal_consistency")}})
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / "best_vs_published.parquet", index=False)
    return verdict(table, out)


def evaluate(checkpoint: Path, sample: Path) -> dict:
    exe = Path(sys.executable).parent / "p2m"
    text = subprocess.run([str(exe), "evaluate", "--checkpoint", str(checkpoint), "--data", str(sample), "--split",
                           "all", "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(text)


def verdict(table: pd.DataFrame, out: Path) -> int:
    summary = table.groupby(["dataset", "arm", "stage"])[["cd_x1000", "f_tau", "f_2tau", "normal_consistency"]]
    mean, std = summary.mean(), summary.std(ddof=1)
    lines = ["mean ± std over seeds:"]
    for key, row in mean.iterrows():
        s = std.loc[key]
        lines.append(f"  {key[0]:<15} {key[1]:<10} stage {key[2]}: CDx1000 {row['cd_x1000']:.3f} ± {s['cd_x1000']:.3f}"
                     f"  F@tau {row['f_tau']:.2f} ± {s['f_tau']:.2f}  F@2tau {row['f_2tau']:.2f}"
                     f"  NC {row['normal_consistency']:.3f}")
    test = mean.loc["synthetic test"]
    cd_change = test.loc[("searched", 3), "cd_x1000"] / test.loc[("published", 3), "cd_x1000"] - 1
    f_gain = test.loc[("searched", 3), "f_tau"] - test.loc[("published", 3), "f_tau"]
    cds = [test.loc[("searched", s), "cd_x1000"] for s in (1, 2, 3)]
    lines += [
        f"test CD, searched vs published (stage 3): {100 * cd_change:+.1f}% (goal <= -15%) -> "
        f"{met(cd_change <= -0.15)}",
        f"test F@tau, searched - published (stage 3): {f_gain:+.2f} points (goal >= +5) -> "
        f"{met(f_gain >= 5)}",
        f"searched, test CD by stage: {cds[0]:.3f} > {cds[1]:.3f} > {cds[2]:.3f} -> "
        f"{met(cds[0] > cds[1] > cds[2])}",
    ]
    return write_verdict(lines, out / "verdict_best_vs_published.txt")


if __name__ == "__main__":
    sys.exit(main())
