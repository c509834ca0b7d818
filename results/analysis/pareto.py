"""Trade-offs between objectives: the Pareto front of a search's trials and a stated rule that picks one.

A multi-objective search (``search.objectives``) has no single best trial: it has a front, the trials that no
other trial beats on every objective at once. ``p2m search train-best --pick RULE`` retrains the trial of the
front that the rule names, for example::

    min val_s3_cd where val_s3_normal_consistency >= published

the lowest stage-3 CD among the front's trials whose normal consistency is at least the ``published``
baseline's (a baseline's last value, or a number). A rule is ``min|max METRIC [where METRIC >=|<= NAME|NUMBER]``.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from p2m.names import val_metric_mode
from results.schema import BASELINE, LAST_PREFIX, STOP_COMPLETED, STOP_REASON
from results.parquet import ResultsError

_RULE = re.compile(r"^\s*(min|max)\s+(\S+)(?:\s+where\s+(\S+)\s*(>=|<=)\s*(\S+))?\s*$")


def pareto_mask(values: np.ndarray, modes: list[str]) -> np.ndarray:
    """Which rows of ``values`` (P, K) no other row dominates: at least as good in every column and better in
    one, "min" or "max" per column (``modes``). A row with a non-finite value is never on the front.

    Returns:
        BoolTensor-like ndarray (P,).
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(modes):
        raise ValueError(f"values must have shape (P, {len(modes)}), got {values.shape}")
    signs = np.array([1.0 if m == "min" else -1.0 for m in modes])  # as minimisation
    v = values * signs
    finite = np.isfinite(v).all(axis=1)
    keep = np.zeros(len(v), dtype=bool)
    for i in np.flatnonzero(finite):
        others = v[finite]
        keep[i] = not np.any(np.all(others <= v[i], axis=1) & np.any(others < v[i], axis=1))
    return keep


def front(trials: pd.DataFrame, objectives: dict[str, str], extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The trials that reached max_t, with their last value of each objective (column -> mode) and of each
    ``extra`` metric as a column of that name, and ``on_front`` (the front of the objectives); in the trials
    table's order."""
    columns = list(dict.fromkeys([*objectives, *extra]))
    missing = [LAST_PREFIX + c for c in columns if LAST_PREFIX + c not in trials]
    if missing:
        raise ResultsError(f"the trials table has no {missing[0]} (was it reported?)")
    done = trials[trials[STOP_REASON] == STOP_COMPLETED].copy()
    for column in columns:
        done[column] = pd.to_numeric(done[LAST_PREFIX + column], errors="coerce")
    done["on_front"] = pareto_mask(done[list(objectives)].to_numpy().reshape(len(done), len(objectives)),
                                   list(objectives.values()))
    return done


def pick_on_front(trials: pd.DataFrame, rule: str, objectives: dict[str, str]) -> pd.Series:
    """The trial of the front that ``rule`` names (see the module docstring).

    Raises:
        ResultsError: naming the rule, when it does not parse, names an unknown metric or baseline, or no trial
            of the front meets it.
    """
    match = _RULE.match(rule)
    if not match:
        raise ResultsError(f"--pick {rule!r}: expected 'min|max METRIC [where METRIC >=|<= BASELINE|NUMBER]'")
    how, metric, other, op, ref = match.groups()
    for column in (metric, other):
        if column is not None:
            try:
                val_metric_mode(column)
            except ValueError as exc:
                raise ResultsError(f"--pick {rule!r}: {exc}") from None
    table = front(trials, objectives, tuple(c for c in (metric, other) if c))
    candidates = table[table["on_front"]]
    if other is not None:
        bound = _reference(table, trials, other, ref, rule)
        values = candidates[other]
        candidates = candidates[values >= bound if op == ">=" else values <= bound]
    candidates = candidates[np.isfinite(candidates[metric])]
    if candidates.empty:
        raise ResultsError(f"--pick {rule!r}: no trial on the front ({int(table['on_front'].sum())} trials) meets it")
    order = candidates[metric].sort_values(ascending=how == "min", kind="stable")
    return trials.loc[order.index[0]]


def _reference(table: pd.DataFrame, trials: pd.DataFrame, column: str, ref: str, rule: str) -> float:
    try:
        return float(ref)
    except ValueError:
        pass
    rows = table[table[BASELINE] == ref] if BASELINE in table else table.iloc[:0]
    if rows.empty:
        known = sorted(trials[BASELINE].dropna().unique()) if BASELINE in trials else []
        raise ResultsError(f"--pick {rule!r}: {ref!r} is neither a number nor a baseline that reached max_t "
                           f"(baselines: {', '.join(known) or 'none'})")
    return float(rows[column].iloc[0])
