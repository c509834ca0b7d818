"""The second study's P3 judged on both its conditions together in each resample (issue 27).

    python benchmarks/p3_joint.py               # a few minutes on 2 cores
    python benchmarks/p3_joint.py --smoke-test  # seconds: 4 resamples of 4 orderings, written to a temp folder

P3 asks that ASHA keep the final winner in >= 90% of replayed orderings AND spend <= 0.4 of FIFO's
trial-epochs. The second edition (``study_second_edition.py``, ``asha_replay``) judged each condition from its
own 95% interval. This replays the same settings on the same bootstrap (the committed FIFO + random curves,
graces 1-3 and reduction factors 2-4, 40 orderings, 200 resamples of the trials with replacement drawn from
``default_rng(0)``, resample b's orderings seeded with b), keeps every resample's epochs share and winner kept
per setting, and judges the goal by :func:`results.analysis.replay.joint_goal`'s rule, decided before this was run:
a setting meets the goal when both conditions hold together in >= 95% of the resamples, misses it when they
do in <= 5%, and is inconclusive otherwise; the goal is met when any setting meets it, NOT met when every
setting misses it. It prints, per setting, the point values and the per-condition 95% intervals as the
second edition did, the share of resamples in which each condition holds alone and both together, and
writes that table to ``benchmarks/evidence/study2/p3_joint/p3_joint.csv``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _study import EVIDENCE

from p2m.atomic import atomic_write_bytes
from p2m.names import SETTINGS_FILE
from results.analysis.fidelity import full_curves
from results.analysis.replay import JOINT_SHARE, POINT_MET, RESAMPLE, RESAMPLES, joint_goal, overall_verdict, replay
from results.parquet import read_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = ["grace_period", "reduction_factor"]
# the second edition's replay settings and goal (study_second_edition.py: _replay_intervals and asha_replay;
# repeated here because that script keeps them inside its functions)
SETTINGS = {"graces": [1, 2, 3], "factors": [2.0, 3.0, 4.0], "algorithms": ("asha",)}
KEPT, SHARE = ("winner_kept", ">=", 0.9), ("epochs_share", "<=", 0.4)
BOOT, ORDERINGS = 200, 40
PROGRESS_EVERY = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fifo", default=str(EVIDENCE / "study2" / "searches" / "fifo_random"),
                        help="the FIFO + random search whose full curves are replayed")
    parser.add_argument("--out", default=str(EVIDENCE / "study2" / "p3_joint"), help="where p3_joint.csv goes")
    parser.add_argument("--boot", type=int, default=BOOT, help="resamples of the trials")
    parser.add_argument("--orderings", type=int, default=ORDERINGS, help="trial orderings per replay")
    parser.add_argument("--smoke-test", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if args.smoke_test:
        args.boot, args.orderings, out = 4, 4, Path(tempfile.mkdtemp(prefix="p3-joint-smoke-"))
    start = time.perf_counter()
    print(_provenance())
    fifo = Path(args.fifo)
    max_t = int(yaml.safe_load((fifo / SETTINGS_FILE).read_text())["max_t"])
    curves = full_curves(read_results(fifo), max_t)
    point, draws = replay_draws(curves, args.boot, args.orderings)
    table = p3_table(point, draws)
    atomic_write_bytes(out / "p3_joint.csv", table.to_csv(index=False).encode())
    overall = overall_verdict(table["verdict"])
    print(f"run time {time.perf_counter() - start:.0f} s; {len(curves)} FIFO curves (max_t {max_t}), "
          f"{args.orderings} orderings, {args.boot} resamples of the trials, {len(table)} ASHA settings")
    print(_against_second_edition(table, EVIDENCE / "study2" / "asha_replay.csv", args))
    print(f"P3 (joint rule) ASHA keeps the final winner in >= 90% of replayed orderings AND spends <= 0.4 of "
          f"FIFO's trial-epochs, both in the same resample: met when they hold together in >= 95% of the "
          f"resamples, NOT met when in <= 5%")
    for r in table.itertuples(index=False):
        print(f"     grace {r.grace_period}, factor {r.reduction_factor:g}: {r.epochs_share:.2f} "
              f"[{r.share_low:.2f}, {r.share_high:.2f}] of the epochs, winner kept {r.winner_kept:.2f} "
              f"[{r.kept_low:.2f}, {r.kept_high:.2f}]; point meets both: {'yes' if r.point_met else 'no'}; "
              f"resamples with <= 0.4 {r.share_held:.3f}, with >= 0.9 {r.kept_held:.3f}, both "
              f"{r.joint_share:.3f} -> {r.verdict}")
    best = table.loc[table[JOINT_SHARE].idxmax()]
    print(f"P3 (joint rule) -> {overall} (the highest joint share: grace {best['grace_period']}, factor "
          f"{best['reduction_factor']:g}, {best[JOINT_SHARE]:.3f} of {best[RESAMPLES]} resamples)")
    table_path = (out / "p3_joint.csv").resolve()
    print(f"table: {table_path.relative_to(ROOT) if table_path.is_relative_to(ROOT) else table_path}")
    return 0


def replay_draws(curves: pd.DataFrame, boot: int, orderings: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The replay on the curves as they are, and on each of ``boot`` resamples of them (trials drawn with
    replacement, as ``study_second_edition._replay_intervals`` draws them), one row per resample and setting."""
    settings = {**SETTINGS, "orderings": orderings}
    point = replay(curves, **settings)
    rng = np.random.default_rng(0)
    draws = []
    for b in range(boot):
        resampled = curves.iloc[rng.integers(0, len(curves), len(curves))].reset_index(drop=True)
        draws.append(replay(resampled, seed=b, **settings).assign(**{RESAMPLE: b}))
        if (b + 1) % PROGRESS_EVERY == 0 or b + 1 == boot:
            print(f"resample {b + 1}/{boot}", file=sys.stderr, flush=True)
    return point, pd.concat(draws, ignore_index=True)


def p3_table(point: pd.DataFrame, draws: pd.DataFrame) -> pd.DataFrame:
    """Per setting: the point values, each condition's 95% percentile interval (as the second edition), the
    share of resamples in which each condition holds alone, both together, the verdict and ``point_met``."""
    judged = joint_goal(draws, [SHARE, KEPT], KEY, point=point)
    judged = judged.rename(columns={_label(SHARE): "share_held", _label(KEPT): "kept_held"})
    table = point[KEY + ["epochs_share", "winner_kept"]].copy()
    groups = draws.groupby(KEY)
    for column, short in (("epochs_share", "share"), ("winner_kept", "kept")):
        bounds = groups[column].quantile([0.025, 0.975]).unstack()
        table = table.merge(bounds.set_axis([f"{short}_low", f"{short}_high"], axis=1).reset_index(), on=KEY)
    table = table.merge(judged, on=KEY)
    return table[KEY + ["epochs_share", "share_low", "share_high", "winner_kept", "kept_low", "kept_high",
                        RESAMPLES, "share_held", "kept_held", JOINT_SHARE, "verdict", POINT_MET]]


def _label(condition: tuple[str, str, float]) -> str:
    column, op, threshold = condition
    return f"{column} {op} {threshold:g}"


def _against_second_edition(table: pd.DataFrame, cached: Path, args) -> str:
    """Whether the point values and intervals equal the second edition's cached asha_replay.csv."""
    if args.smoke_test or args.boot != BOOT or args.orderings != ORDERINGS or not cached.is_file():
        return "second edition's asha_replay.csv: not compared (other settings, or no such file)"
    old = pd.read_csv(cached).merge(table, on=KEY, suffixes=("_old", ""))
    columns = ["epochs_share", "winner_kept", "share_low", "share_high", "kept_low", "kept_high"]
    gap = max(float((old[c] - old[f"{c}_old"]).abs().max()) for c in columns)
    return (f"second edition's asha_replay.csv: {len(old)} of {len(table)} settings matched, point values and "
            f"intervals differ by at most {gap:.1e}")


def _provenance() -> str:
    """The commit this runs at, and whether the tree (and the files this reads) differ from it."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    tree = git("status", "--porcelain", "--untracked-files=no")
    used = git("status", "--porcelain", "--", "benchmarks/p3_joint.py", "results", "p2m",
               "benchmarks/evidence/study2/searches/fifo_random")
    clean = "yes" if not tree else f"no ({len(tree.splitlines())} tracked files changed)"
    return (f"commit {commit}; tree clean: {clean}; this script, results/, p2m/ and the FIFO search as "
            f"committed: {'yes' if not used else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
