"""The noise floor: how much a configuration's result moves with the training seed alone, and so which
changes a comparison over n seeds can resolve.

The seed standard deviation is pooled within configurations (one-way ANOVA's within-group estimate): each
configuration trained with several seeds contributes its own spread, so differences between configurations
do not inflate it. A paired comparison of two configurations over the same n seeds has per-seed differences
with standard deviation ``sd_diff``; without a shared per-seed component that is ``sqrt(2) * sd``, and pairing
by seed makes it smaller where seeds affect both arms alike. The sizes below use the normal approximation of a
two-sided test at level alpha with the given power (Cohen 1988): with few seeds the t distribution's heavier
tails make the true figures somewhat larger.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from results.analysis.paired import ALPHA
from results.analysis.race import CANDIDATE, VALUE

POWER = 0.8  # the chance a real change of the stated size is detected


def seed_sd(runs: pd.DataFrame, group: str = CANDIDATE, value: str = VALUE) -> tuple[float, int]:
    """The pooled within-configuration standard deviation of ``value`` over seeds.

    Args:
        runs: one row per run, with the columns ``group`` (a configuration) and ``value`` (finite floats).
        group: the column naming a run's configuration.
        value: the column of the result.

    Returns:
        (sd, dof): the square root of the pooled variance ``sum((n_g - 1) s_g^2) / sum(n_g - 1)`` over the
        groups with at least two runs, and its degrees of freedom ``sum(n_g - 1)``; (NaN, 0) when no group
        has two runs.
    """
    missing = [c for c in (group, value) if c not in runs.columns]
    if missing:
        raise ValueError(f"runs must have the columns {group!r} and {value!r}; missing {missing}")
    values = runs[value].to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise ValueError(f"runs' {value!r} must be finite, got {int((~np.isfinite(values)).sum())} non-finite")
    by_group = runs.groupby(group, sort=True)[value]
    n = by_group.count()
    squares = by_group.agg(lambda v: float(((v - v.mean()) ** 2).sum()))  # sum of squared deviations
    dof = int((n[n >= 2] - 1).sum())
    if dof == 0:
        return float("nan"), 0
    return math.sqrt(float(squares[n >= 2].sum()) / dof), dof


def resolvable_change(sd_diff: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest change a paired comparison over n seeds resolves: ``(z_{1-alpha/2} + z_power) * sd_diff /
    sqrt(n)``.

    The normal approximation to a two-sided paired test at level alpha: a true change this large is detected
    with probability ``power``. With few seeds the paired t-test needs somewhat more.

    Args:
        sd_diff: the standard deviation of a per-seed difference, in the change's units (NaN gives NaN).
        n: the number of seeds both arms share, at least 1.
        alpha: the test's two-sided level.
        power: the chance of detecting a change of the returned size.

    Returns:
        The change, in the units of ``sd_diff``.
    """
    _validate_test(alpha, power)
    if n < 1:
        raise ValueError(f"n must be at least 1 seed, got {n!r}")
    if sd_diff < 0:
        raise ValueError(f"sd_diff must be non-negative, got {sd_diff!r}")
    return _z_sum(alpha, power) * sd_diff / math.sqrt(n)


def seeds_needed(change: float, sd_diff: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """How many seeds a paired comparison needs to resolve ``change``: ``ceil(((z_{1-alpha/2} + z_power) *
    sd_diff / |change|)^2)``, at least 2 (normal approximation, as :func:`resolvable_change`).

    Args:
        change: the change to resolve, in the units of ``sd_diff``.
        sd_diff: the standard deviation of a per-seed difference.
        alpha: the test's two-sided level.
        power: the chance of detecting ``change``.

    Returns:
        The number of seeds (an int), inf when ``change`` is zero or not finite, NaN when ``sd_diff`` is NaN.
    """
    _validate_test(alpha, power)
    if sd_diff < 0:
        raise ValueError(f"sd_diff must be non-negative, got {sd_diff!r}")
    if change == 0 or not math.isfinite(change):
        return math.inf
    if math.isnan(sd_diff):
        return math.nan
    return max(2, math.ceil((_z_sum(alpha, power) * sd_diff / abs(change)) ** 2))


def _validate_test(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power!r}")


def _z_sum(alpha: float, power: float) -> float:
    """``z_{1-alpha/2} + z_power``: standard normal quantiles of the two-sided level and the power."""
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
