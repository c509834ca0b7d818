"""Is the best configuration better than a baseline, beyond the noise of seeds and test models?

Both arms are evaluated on the same test views, each with the same K seeds (``train-best --seeds K``), so the
comparison is paired twice: seed k of one arm against seed k of the other, view against view. The change in
a metric is that of its mean over seeds and views; its 95% interval comes from a two-way percentile
bootstrap that resamples seeds and test models (a model's views together: they are not independent) with
replacement, the same draws for both arms. Chamfer distance (and smoothness) changes are relative, F-scores
and normal consistency changes are differences in points. The verdict is ``better`` or ``worse`` when the
whole interval lies on one side of no change, ``inconclusive`` otherwise.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from p2m.names import STAGES, stage_key
from results.schema import VIEW_KEY

# metric: (lower is better, relative change)
COMPARED = {"cd_x1000": (True, True), "f_tau": (False, False), "f_2tau": (False, False),
            "normal_consistency": (False, False)}
CONFIDENCE = 0.95
MODEL = list(VIEW_KEY[:2])  # (synset, model_id): a test model, whose views resample together


def model_matrix(views: pd.DataFrame, column: str) -> tuple[np.ndarray, list]:
    """seed x model means of ``column`` (each model's views averaged), and the models in column order.

    Args:
        views: one row per seed and view, with ``seed`` and the ``VIEW_KEY`` columns.
    """
    table = views.pivot_table(index="seed", columns=MODEL, values=column, aggfunc="mean")
    return table.to_numpy(dtype=float), list(table.columns)


def paired_change(best: np.ndarray, base: np.ndarray, relative: bool, n_boot: int = 4000,
                  seed: int = 0) -> tuple[float, float, float]:
    """The change of the mean from ``base`` to ``best`` and its percentile-bootstrap interval.

    Args:
        best, base: seed x model matrices (the same seeds and models in the same order).
        relative: the change is ``best / base - 1``; else ``best - base``.

    Returns:
        (change, low, high).
    """
    if best.shape != base.shape:
        raise ValueError(f"paired arms need the same seeds and models, got {best.shape} and {base.shape}")
    K, J = best.shape
    rng = np.random.default_rng(seed)
    seeds = _counts(rng, n_boot, K)  # (B, K) how often each seed is drawn
    models = _counts(rng, n_boot, J)  # (B, J)
    a = np.einsum("bk,kj,bj->b", seeds, best, models) / (K * J)
    b = np.einsum("bk,kj,bj->b", seeds, base, models) / (K * J)
    boot = a / b - 1 if relative else a - b
    point = best.mean() / base.mean() - 1 if relative else best.mean() - base.mean()
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(point), float(low), float(high)


def verdict(low: float, high: float, lower_better: bool) -> str:
    """``better`` / ``worse`` when the whole interval says so, else ``inconclusive``."""
    if high < 0:
        return "better" if lower_better else "worse"
    if low > 0:
        return "worse" if lower_better else "better"
    return "inconclusive"


def compare_arms(best: pd.DataFrame, base: pd.DataFrame, n_boot: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Every compared metric and stage, best arm against a baseline arm (per-view rows of both).

    Seeds are paired by rank (the k-th retrain of one arm with the k-th of the other) and views by identity;
    only the seeds and views both arms have count.

    Columns: stage, metric, best, baseline, change, low, high, relative, verdict, seeds, models.
    """
    best, base = _ranked_seeds(best), _ranked_seeds(base)
    seeds = sorted(set(best["seed"]) & set(base["seed"]))
    keys = set(map(tuple, best[list(VIEW_KEY)].to_numpy())) & set(map(tuple, base[list(VIEW_KEY)].to_numpy()))
    both = [df[df["seed"].isin(seeds) & df[list(VIEW_KEY)].apply(tuple, axis=1).isin(keys)] for df in (best, base)]
    rows = []
    for s in STAGES:
        for metric, (lower_better, relative) in COMPARED.items():
            column = stage_key(s, metric)
            a, _ = model_matrix(both[0], column)
            b, models = model_matrix(both[1], column)
            change, low, high = paired_change(a, b, relative, n_boot, seed)
            rows.append({"stage": s, "metric": metric, "best": float(a.mean()), "baseline": float(b.mean()),
                         "change": change, "low": low, "high": high, "relative": relative,
                         "verdict": verdict(low, high, lower_better), "seeds": len(seeds), "models": len(models)})
    return pd.DataFrame(rows)


def _ranked_seeds(views: pd.DataFrame) -> pd.DataFrame:
    """``seed`` replaced by its rank among the arm's seeds (0, 1, ...), so arms retrained from different base
    seeds still pair their k-th runs."""
    order = {s: k for k, s in enumerate(sorted(views["seed"].unique()))}
    return views.assign(seed=views["seed"].map(order))


def _counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n): how many times each of n units is drawn in each bootstrap resample of size n."""
    draws = rng.integers(0, n, size=(n_boot, n))
    return np.stack([np.bincount(row, minlength=n) for row in draws]).astype(float)
