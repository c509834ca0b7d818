"""The leaderboard printed at the end of a search, ranked by the one rule of :mod:`results.trials`."""
from __future__ import annotations

import math

import pandas as pd

from results.schema import ERROR, ITERATIONS, LAST_OBJECTIVE, STOP_REASON, TRIAL_ID, WEIGHT_COLUMNS
from results.trials import rank_trials


def format_leaderboard(trials: pd.DataFrame, top: int = 15) -> str:
    """The ``top`` trials in rank order with their last stage-3 CD and the 12 weights."""
    board = rank_trials(trials).head(top)
    short = {col: col.rsplit(".", 1)[-1].replace("_chamfer", "_ch").replace("_laplacian", "_lap")
             .replace("_normal", "_nrm") for col in WEIGHT_COLUMNS if col in board}
    header = f"{'#':>2} {'trial':<14} {'stop':<14} {'ep':>3} {'last CDx1000':>12}  " + " ".join(
        f"{name:>7}" for name in short.values())
    lines = [f"leaderboard: {len(trials)} trials ({_counts(trials)})", header]
    for _, row in board.iterrows():
        value = row.get(LAST_OBJECTIVE)
        cd = f"{1000 * value:12.3f}" if _number(value) else f"{'-':>12}"
        weights = " ".join(f"{row[col]:7.3g}" if _number(row.get(col)) else f"{'-':>7}" for col in short)
        lines.append(f"{row['rank']:>2} {str(row[TRIAL_ID]):<14} {str(row[STOP_REASON]):<14} {int(row[ITERATIONS]):>3} "
                     f"{cd}  {weights}")
        if isinstance(row.get(ERROR), str) and row.get(ERROR):
            lines.append(f"   {str(row[ERROR])[:110]}")
    return "\n".join(lines)


def _counts(trials: pd.DataFrame) -> str:
    counts = trials[STOP_REASON].value_counts()
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
