"""Does an early epoch rank trials as the last one does? The question ASHA's grace period bets on.

For every epoch before ``max_t``, the rank correlation (Spearman and Kendall) between the trials' objective at
that epoch and at ``max_t``, over the trials that reported every epoch (a FIFO search's, or an ASHA search's
survivors and baselines, a biased sample), with percentile-bootstrap 95% intervals over trials. The grace
period that follows is the earliest epoch whose Spearman lower bound reaches the threshold (0.5 by
default): from there on, a rung that stops the worse trials stops, with that confidence, trials that would
also have ended worse.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from p2m.names import EPOCH, OBJECTIVE
from results.schema import ITERATION, TRIAL_ID, VIEW_KEY

THRESHOLD = 0.5
MIN_TRIALS = 4  # fewer full curves than this and there is nothing to correlate


def full_curves(results: pd.DataFrame, max_t: int, metric: str = OBJECTIVE) -> pd.DataFrame:
    """trial x epoch (1..max_t) of ``metric``, for the trials that reported a finite value at every epoch."""
    curves = results.pivot_table(index=TRIAL_ID, columns=ITERATION, values=metric, aggfunc="last")
    curves = curves.reindex(columns=range(1, max_t + 1))
    return curves[np.isfinite(curves.to_numpy(dtype=float)).all(axis=1)]


def rank_fidelity(curves: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per epoch before the last: Spearman and Kendall correlation with the last epoch's ranking, and
    their 95% percentile-bootstrap intervals over trials.

    Args:
        curves: trial x epoch values (:func:`full_curves`); the last column is the final epoch.
    """
    columns = [EPOCH, "trials", "spearman", "spearman_low", "spearman_high", "kendall", "kendall_low",
               "kendall_high"]
    n, epochs = curves.shape
    if n < MIN_TRIALS or epochs < 2:
        return pd.DataFrame(columns=columns)
    values = curves.to_numpy(dtype=float)
    final = values[:, -1]
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, n, size=(n_boot, n))
    rows = []
    for j, epoch in enumerate(curves.columns[:-1]):
        early = values[:, j]
        boot = _resampled_correlations(early, final, samples)  # (n_boot, 2)
        point = _correlations(early, final)
        with np.errstate(all="ignore"):
            low, high = np.nanpercentile(boot, [2.5, 97.5], axis=0)
        rows.append([int(epoch), n, point[0], low[0], high[0], point[1], low[1], high[1]])
    return pd.DataFrame(rows, columns=columns)


def predictive_grace(table: pd.DataFrame, threshold: float = THRESHOLD) -> int | None:
    """The earliest epoch whose Spearman lower bound reaches ``threshold`` (None when none does)."""
    ok = table[table["spearman_low"] >= threshold]
    return int(ok[EPOCH].iloc[0]) if len(ok) else None


def validation_reliability(views: pd.DataFrame, epoch: int, metric: str = "s3_cd", splits: int = 500,
                           seed: int = 0) -> tuple[float, int, int]:
    """How reproducible the validation's ranking of trials is, from the per-view rows of one epoch: the mean
    Spearman correlation between the rankings on two random halves of the validation models (a model's views
    together), corrected by Spearman-Brown to the whole set, ``2r / (1 + r)``. No early rung can predict a
    final ranking that the validation itself cannot reproduce.

    Returns:
        (reliability, models, trials).
    """
    at = views[views[ITERATION] == epoch]
    table = at.pivot_table(index=TRIAL_ID, columns=list(VIEW_KEY[:2]), values=metric, aggfunc="mean").dropna(axis=1)
    values = table.to_numpy(dtype=float)
    trials, models = values.shape
    if trials < MIN_TRIALS or models < 2:
        return float("nan"), models, trials
    rng = np.random.default_rng(seed)
    halves = []
    for _ in range(splits):
        order = rng.permutation(models)
        a, b = values[:, order[: models // 2]].mean(1), values[:, order[models // 2:]].mean(1)
        halves.append(stats.spearmanr(a, b).statistic)
    r = float(np.nanmean(halves))
    return 2 * r / (1 + r), models, trials


def _resampled_correlations(a: np.ndarray, b: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Spearman's rho and Kendall's tau-b (scipy's definitions, ties included) of ``(a[idx], b[idx])`` for each
    row ``idx`` of ``samples``, all at once: (len(samples), 2). A resample with no ranking (constant) gets NaN.

    rho: Pearson's correlation of average ranks. tau-b over ordered pairs of a resample:
    (concordant - discordant) / sqrt(pairs untied in a x pairs untied in b). A resample is its counts ``c`` of each
    trial, so each of those pair counts is a quadratic form ``c' M c`` of a fixed n x n matrix (with ``Ga[i, j] =
    a[i] > a[j]``: concordant ``Ga & Gb``, discordant ``Ga & Gb'``, untied ``Ga``): one matrix product for all.
    """
    ra, rb = stats.rankdata(a[samples], axis=1), stats.rankdata(b[samples], axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    n_boot, n = samples.shape
    counts = np.bincount((samples + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n)
    counts = counts.reshape(n_boot, n).astype(float)
    ga, gb = a[:, None] > a[None, :], b[:, None] > b[None, :]

    def pairs(m: np.ndarray) -> np.ndarray:
        return ((counts @ m.astype(float)) * counts).sum(1)

    with np.errstate(all="ignore"):
        rho = (ra * rb).sum(1) / np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
        tau = (pairs(ga & gb) - pairs(ga & gb.T)) / np.sqrt(pairs(ga) * pairs(gb))
    out = np.stack([rho, tau], axis=1)
    constant = (np.ptp(a[samples], axis=1) == 0) | (np.ptp(b[samples], axis=1) == 0)
    out[constant] = np.nan
    return out


def _correlations(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # a resample of one repeated trial: no ranking
        return np.nan, np.nan
    return float(stats.spearmanr(a, b).statistic), float(stats.kendalltau(a, b).statistic)
