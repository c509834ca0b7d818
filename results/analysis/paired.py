"""Is the best configuration better than a baseline, beyond the noise of seeds and test models?

Both arms are evaluated on the same test views, each with the same K seeds (``train-best --seeds K``), so the
comparison is paired twice: seed k of one arm against seed k of the other, view against view. The change in
a metric is that of its mean over seeds and views; its 95% interval comes from a two-way percentile
bootstrap that resamples seeds and test models (a model's views together: they are not independent) with
replacement, the same draws for both arms. Chamfer distance (and smoothness) changes are relative, F-scores
and normal consistency changes are differences in points. The verdict is ``better`` or ``worse`` when the
whole interval lies on one side of no change, ``inconclusive`` otherwise.

The same resamples give a two-sided bootstrap p-value of "no change". A verdict that reads several
comparisons at once (metrics, baselines) is one family: :func:`decide_family` adjusts its p-values by Holm's
step-down rule, and calls a change ``equivalent`` when it is not significant and its whole interval (at the
Bonferroni level the caller chose) lies inside the metric's equivalence margin.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from p2m.names import STAGES, metric_row, stage_key
from results.schema import SEED, VIEW_KEY

# metric: (lower is better, relative change), from the metric table
COMPARED = {m: (not metric_row(m).higher_is_better, metric_row(m).relative) for m in ("cd_x1000", "f_tau", "f_2tau",
                                                                              "normal_consistency")}
CONFIDENCE = 0.95
ALPHA = 0.05  # family-wise error rate of a verdict's family of comparisons
# metric: the largest change, in its change units, that still counts as no change (cd_x1000: +-2% relative)
EQUIVALENCE_MARGINS = {"cd_x1000": 0.02}
MODEL = list(VIEW_KEY[:2])  # (synset, model_id): a test model, whose views resample together


def model_matrix(views: pd.DataFrame, column: str) -> tuple[np.ndarray, list]:
    """seed x model means of ``column`` (each model's views averaged), and the models in column order.

    Args:
        views: one row per seed and view, with ``seed`` and the ``VIEW_KEY`` columns.
    """
    table = views.pivot_table(index=SEED, columns=MODEL, values=column, aggfunc="mean")
    return table.to_numpy(dtype=float), list(table.columns)


def paired_change(best: np.ndarray, base: np.ndarray, relative: bool, n_boot: int = 4000,
                  seed: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The change of the mean from ``base`` to ``best`` and its percentile-bootstrap interval.

    Args:
        best, base: seed x model matrices (the same seeds and models in the same order).
        relative: the change is ``best / base - 1``; else ``best - base``.
        confidence: the interval's level, e.g. ``1 - ALPHA / m`` for one of a family of m comparisons.

    Returns:
        (change, low, high).
    """
    point, boot = bootstrap_change(best, base, relative, n_boot, seed)
    low, high = percentile_interval(boot, confidence)
    return point, low, high


def bootstrap_change(best: np.ndarray, base: np.ndarray, relative: bool, n_boot: int = 4000,
                     seed: int = 0) -> tuple[float, np.ndarray]:
    """The change of the mean from ``base`` to ``best`` and its two-way bootstrap resamples.

    Seeds (rows) and test models (columns) are resampled with replacement, the same draws for both arms.

    Args:
        best, base: seed x model matrices (the same seeds and models in the same order).
        relative: the change is ``best / base - 1``; else ``best - base``.

    Returns:
        (change, boot): the point change, and float (n_boot,) the change in each resample.
    """
    if best.shape != base.shape:
        raise ValueError(f"paired arms need the same seeds and models, got {best.shape} and {base.shape}")
    K, J = best.shape
    rng = np.random.default_rng(seed)
    seeds = _counts(rng, n_boot, K)  # (B, K) how often each seed is drawn
    models = _counts(rng, n_boot, J)  # (B, J)
    a = np.einsum("bk,kj,bj->b", seeds, best, models) / (K * J)  # (B,)
    b = np.einsum("bk,kj,bj->b", seeds, base, models) / (K * J)  # (B,)
    boot = a / b - 1 if relative else a - b
    point = best.mean() / base.mean() - 1 if relative else best.mean() - base.mean()
    return float(point), boot


def percentile_interval(boot: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap resamples ``boot`` (float (B,))."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_p(boot: np.ndarray) -> float:
    """The two-sided bootstrap p-value of "no change": twice the smaller share of resamples on either side of
    zero (those at zero count on both), at most 1. Its resolution is ``1 / len(boot)``.

    Args:
        boot: float (B,) the change in each resample.

    Returns:
        the p-value; NaN when a resample's change is not finite (e.g. an arm without rows), which no verdict reads
        as evidence.
    """
    if len(boot) == 0 or not np.isfinite(boot).all():
        return float("nan")
    return float(min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0))))


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order (Holm 1979).

    Sorted ascending, the i-th smallest of m p-values (i from 0) is multiplied by ``m - i``; a running maximum
    keeps the adjusted values monotone, and they are capped at 1. Rejecting where the adjusted value is below
    alpha controls the family-wise error rate at alpha. NaN p-values stay NaN and do not count in m.

    Args:
        p_values: float (m,) p-values in [0, 1] (NaN allowed).

    Returns:
        float (m,) adjusted p-values.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p_values must lie in [0, 1], got {p[finite][(p[finite] < 0) | (p[finite] > 1)]}")
    out = np.full(p.shape, np.nan)
    index = np.flatnonzero(finite)
    order = index[np.argsort(p[index], kind="stable")]  # positions of the finite p-values, ascending
    m = len(order)
    steps = (m - np.arange(m)) * p[order]  # (m,)
    out[order] = np.minimum(1.0, np.maximum.accumulate(steps)) if m else steps
    return out


def decide_family(table: pd.DataFrame, alpha: float = ALPHA, margins: dict | None = None) -> pd.DataFrame:
    """Verdicts for one family of comparisons, Holm-adjusted, with equivalence where a metric has a margin.

    A comparison is ``better`` or ``worse`` when Holm's adjusted p-value is below ``alpha`` (the direction from
    the sign of its change and whether the metric is lower-is-better, :data:`COMPARED`); ``equivalent`` when
    it is not and its whole interval lies strictly inside plus or minus the metric's margin; else
    ``inconclusive``. A metric without a margin is never ``equivalent``; a change of exactly zero is never
    ``better`` or ``worse``.

    Args:
        table: one row per comparison of the family, with columns metric (a key of :data:`COMPARED`), change,
            low, high (the interval, already at the family's Bonferroni level ``1 - alpha / m``) and p.
        alpha: the family-wise error rate.
        margins: metric -> equivalence margin in the metric's change units; None means
            :data:`EQUIVALENCE_MARGINS`.

    Returns:
        A copy of ``table`` with the columns p_holm and verdict (replaced if present).
    """
    missing = [c for c in ("metric", "change", "low", "high", "p") if c not in table.columns]
    if missing:
        raise ValueError(f"table must have the columns metric, change, low, high, p; missing {missing}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    unknown = sorted(set(table["metric"]) - set(COMPARED))
    if unknown:
        raise ValueError(f"table's metrics must be among {sorted(COMPARED)}, got {unknown}")
    margins = EQUIVALENCE_MARGINS if margins is None else margins
    out = table.copy()
    out["p_holm"] = holm(out["p"].to_numpy(dtype=float))
    out["verdict"] = [_family_verdict(r.metric, r.change, r.low, r.high, r.p_holm, alpha, margins.get(r.metric))
                      for r in out.itertuples(index=False)]
    return out


def verdict(low: float, high: float, lower_better: bool) -> str:
    """``better`` / ``worse`` when the whole interval says so, else ``inconclusive``."""
    if high < 0:
        return "better" if lower_better else "worse"
    if low > 0:
        return "worse" if lower_better else "better"
    return "inconclusive"


def compare_arms(best: pd.DataFrame, base: pd.DataFrame, n_boot: int = 4000, seed: int = 0,
                 confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Every compared metric and stage, best arm against a baseline arm (per-view rows of both).

    Seeds are paired by rank (the k-th retrain of one arm with the k-th of the other) and views by identity;
    only the seeds and views both arms have count. The interval and p come from the same resamples.

    Args:
        confidence: the intervals' level; for a verdict over a family of m comparisons, ``1 - ALPHA / m``.

    Columns: stage, metric, best, baseline, change, low, high, p, relative, verdict, seeds, models. ``p`` is
    the two-sided bootstrap p-value of no change (:func:`bootstrap_p`), unadjusted; ``verdict`` reads the
    interval alone (:func:`verdict`), :func:`decide_family` the whole family.
    """
    best, base = _ranked_seeds(best), _ranked_seeds(base)
    seeds = sorted(set(best[SEED]) & set(base[SEED]))
    keys = set(map(tuple, best[list(VIEW_KEY)].to_numpy())) & set(map(tuple, base[list(VIEW_KEY)].to_numpy()))
    both = [df[df[SEED].isin(seeds) & df[list(VIEW_KEY)].apply(tuple, axis=1).isin(keys)] for df in (best, base)]
    rows = []
    for s in STAGES:
        for metric, (lower_better, relative) in COMPARED.items():
            column = stage_key(s, metric)
            a, _ = model_matrix(both[0], column)
            b, models = model_matrix(both[1], column)
            change, boot = bootstrap_change(a, b, relative, n_boot, seed)
            low, high = percentile_interval(boot, confidence)
            rows.append({"stage": s, "metric": metric, "best": float(a.mean()), "baseline": float(b.mean()),
                         "change": change, "low": low, "high": high, "p": bootstrap_p(boot), "relative": relative,
                         "verdict": verdict(low, high, lower_better), "seeds": len(seeds), "models": len(models)})
    return pd.DataFrame(rows)


def _ranked_seeds(views: pd.DataFrame) -> pd.DataFrame:
    """``seed`` replaced by its rank among the arm's seeds (0, 1, ...), so arms retrained from different base
    seeds still pair their k-th runs."""
    order = {s: k for k, s in enumerate(sorted(views[SEED].unique()))}
    return views.assign(**{SEED: views[SEED].map(order)})


def _counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n): how many times each of n units is drawn in each bootstrap resample of size n."""
    draws = rng.integers(0, n, size=(n_boot, n))
    return np.stack([np.bincount(row, minlength=n) for row in draws]).astype(float)


def _family_verdict(metric: str, change: float, low: float, high: float, p_holm: float, alpha: float,
                    margin: float | None) -> str:
    """One comparison's verdict within its family (see :func:`decide_family`)."""
    if p_holm < alpha and change != 0:
        return "better" if (change < 0) == COMPARED[metric][0] else "worse"
    if margin is not None and -margin < low and high < margin:
        return "equivalent"
    return "inconclusive"
