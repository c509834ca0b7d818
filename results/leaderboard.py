"""The leaderboard printed at the end of a search: trials ranked by their best stage-3 validation CD."""
from __future__ import annotations

import math

import pandas as pd

from results.schema import ERROR, ITERATIONS, OBJECTIVE, STOP_REASON, TRIAL_ID, WEIGHT_COLUMNS


def leaderboard(trials: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """Trials sorted by ``best_val_s3_cd`` (errored and metric-less trials last)."""
    best = f"best_{OBJECTIVE}"
    df = trials.copy()
    if best not in df:
        df[best] = float("nan")
    df = df.sort_values(best, na_position="last", kind="stable").reset_index(drop=True)
    return df.head(top) if top else df


def format_leaderboard(trials: pd.DataFrame, top: int = 15) -> str:
    board = leaderboard(trials, top)
    short = {col: col.rsplit(".", 1)[-1].replace("_chamfer", "_ch").replace("_laplacian", "_lap")
             .replace("_normal", "_nrm") for col in WEIGHT_COLUMNS if col in board}
    header = f"{'#':>2} {'trial':<14} {'stop':<14} {'ep':>3} {'best CDx1000':>12}  " + " ".join(
        f"{name:>7}" for name in short.values())
    lines = [f"leaderboard: {len(trials)} trials ({_counts(trials)})", header]
    for rank, (_, row) in enumerate(board.iterrows(), start=1):
        value = row.get(f"best_{OBJECTIVE}")
        cd = f"{1000 * value:12.3f}" if isinstance(value, float) and math.isfinite(value) else f"{'-':>12}"
        weights = " ".join(f"{row[col]:7.3g}" if _number(row.get(col)) else f"{'-':>7}" for col in short)
        lines.append(f"{rank:>2} {str(row[TRIAL_ID]):<14} {str(row[STOP_REASON]):<14} {int(row[ITERATIONS]):>3} {cd}  {weights}")
        if isinstance(row.get(ERROR), str) and row.get(ERROR):
            lines.append(f"   {str(row[ERROR])[:110]}")
    return "\n".join(lines)


def _counts(trials: pd.DataFrame) -> str:
    counts = trials[STOP_REASON].value_counts()
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
