"""The trials table (one row per trial) and the one rule that ranks trials.

Every figure of a trial (epochs run, best and last objective, the last epoch's metrics) is derived from its
result rows. What the rows cannot say comes from the search: each trial's Ray status, error, failure count,
baseline name and config (a trial that never reported has a config too). The search's callback writes
``TRIALS_FILE`` with :func:`summarise_trials`, and the analysis completes a stale or missing one with the
same function, so a trial restored after a driver crash keeps its figures.

Ranking, the same for the console leaderboard, the report and ``train-best`` (:func:`rank_trials`): trials
that reached max_t first, by their last objective (the epoch ASHA compared, and the budget ``train-best``
retrains at); then the others by theirs; trials without a finite value last.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from p2m.names import CONFIG_PREFIX, OBJECTIVE
from results.schema import (BASELINE, BEST_ITERATION, BEST_OBJECTIVE, ERROR, EXPERIMENT, ITERATION, ITERATIONS, KEY,
                            LAST_OBJECTIVE, LAST_PREFIX, NUM_FAILURES, PARENT_EPOCH, PARENT_TRIAL, STATUS,
                            STOP_COMPLETED, STOP_EARLY, STOP_ERRORED, STOP_REASON, STOP_UNFINISHED, TRIAL_ID,
                            WRITTEN_AT)
from results.parquet import ResultsError

UNKNOWN = "UNKNOWN"  # the status of a trial the search's record does not have (its driver died first)
META = (EXPERIMENT, STATUS, ERROR, NUM_FAILURES, BASELINE)  # what a search knows of a trial beyond its rows


def stop_reason(status: str, iterations: int, max_t: int) -> str:
    """Why a trial ended: errored (Ray's ERROR), completed (reached max_t), stopped early (Ray ended it before
    max_t), or unfinished (still pending or running when the record was written, or unknown)."""
    if status == "ERROR":
        return STOP_ERRORED
    if iterations >= max_t:
        return STOP_COMPLETED
    return STOP_EARLY if status == "TERMINATED" else STOP_UNFINISHED


def summarise_trials(results: pd.DataFrame, meta: pd.DataFrame, max_t: int) -> pd.DataFrame:
    """One row per trial of ``meta`` or of ``results``, sorted by trial id.

    Args:
        results: the result rows (``read_results``), deduplicated.
        meta: one row per trial the search knows: ``TRIAL_ID`` and any of ``META`` and ``config.*``
            columns. A trial with result rows but no entry gets status ``UNKNOWN``.
        max_t: the epochs a trial runs when nothing stops it.

    Returns:
        the ``META`` columns, ``STOP_REASON``, ``ITERATIONS``, ``BEST_OBJECTIVE``, ``BEST_ITERATION``,
        ``LAST_OBJECTIVE``, the config columns (the search's, else the last row's; and the last row's where
        both are numbers that differ: what the trial last trained with, when a population scheduler changed its
        config after its last epoch) and ``last.<metric>``.
    """
    meta = meta.drop_duplicates(TRIAL_ID, keep="last").set_index(TRIAL_ID)
    ids = sorted(set(meta.index) | set(results[TRIAL_ID] if len(results) else []))
    out = pd.DataFrame({TRIAL_ID: ids}, index=ids)
    rows = results.sort_values(list(KEY), kind="stable")
    last = rows.groupby(TRIAL_ID).tail(1).set_index(TRIAL_ID) if len(rows) else pd.DataFrame()
    for col in META:
        values = meta[col].reindex(ids) if col in meta else pd.Series(np.nan, index=ids, dtype=object)
        if col in last:  # a trial the search's record lacks still has its experiment and baseline in its rows
            values = values.where(values.notna(), last[col].reindex(ids))
        out[col] = values
    out[STATUS] = out[STATUS].where(out[STATUS].notna(), UNKNOWN)
    out[NUM_FAILURES] = out[NUM_FAILURES].fillna(0).astype(int)
    iterations = last[ITERATION].reindex(ids).fillna(0).astype(int) if len(last) else pd.Series(0, index=ids)
    out[ITERATIONS] = iterations
    out[STOP_REASON] = [stop_reason(status, n, max_t) for status, n in zip(out[STATUS], iterations)]
    out[BEST_OBJECTIVE], out[BEST_ITERATION], out[LAST_OBJECTIVE] = np.nan, np.nan, np.nan
    if OBJECTIVE in rows:
        finite = rows[np.isfinite(rows[OBJECTIVE].astype(float))]
        best = finite.loc[finite.groupby(TRIAL_ID)[OBJECTIVE].idxmin()].set_index(TRIAL_ID)
        out[BEST_OBJECTIVE] = best[OBJECTIVE].reindex(ids)
        out[BEST_ITERATION] = best[ITERATION].reindex(ids)
        out[LAST_OBJECTIVE] = last[OBJECTIVE].reindex(ids)
    config = [c for c in dict.fromkeys([*meta.columns, *last.columns]) if c.startswith(CONFIG_PREFIX)]
    for col in config:
        values = meta[col].reindex(ids) if col in meta else pd.Series(np.nan, index=ids, dtype=object)
        if col in last:
            row = last[col].reindex(ids)
            values = values.where(values.notna(), row)
            searched, trained = pd.to_numeric(values, errors="coerce"), pd.to_numeric(row, errors="coerce")
            values = values.mask(searched.notna() & trained.notna() & (searched != trained), row)
        out[col] = values
    skip = {*KEY, WRITTEN_AT, *META}
    metrics = [c for c in last.columns if c not in skip and not c.startswith(CONFIG_PREFIX)
               and pd.api.types.is_numeric_dtype(last[c]) and not pd.api.types.is_bool_dtype(last[c])]
    lasts = pd.DataFrame({LAST_PREFIX + col: last[col].reindex(ids) for col in metrics}, index=ids)
    return pd.concat([out, lasts], axis=1).reset_index(drop=True)  # one join: a column at a time fragments the frame


def rank_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` in rank order (see the module docstring), with a 1-based ``rank`` column first."""
    df = trials.copy()
    value = pd.to_numeric(df[LAST_OBJECTIVE], errors="coerce") if LAST_OBJECTIVE in df else np.nan
    df["_group"] = np.where(df[STOP_REASON] == STOP_COMPLETED, 0, 1)
    df["_value"] = np.where(np.isfinite(value), value, np.inf)
    df = df.sort_values(["_group", "_value", TRIAL_ID], kind="stable").drop(columns=["_group", "_value"])
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df.reset_index(drop=True)


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that reached max_t with a finite objective, in rank order (what a race and ``train-best`` choose
    from)."""
    ranked = rank_trials(trials)
    return ranked[(ranked[STOP_REASON] == STOP_COMPLETED)
                  & np.isfinite(pd.to_numeric(ranked[LAST_OBJECTIVE], errors="coerce"))]


def pick_best(trials: pd.DataFrame) -> pd.Series:
    """The top-ranked trial, which must have reached max_t with a finite objective (what ``train-best``
    retrains).

    Raises:
        ResultsError: when no trial did.
    """
    done = completed(trials)
    if done.empty:
        raise ResultsError(f"no trial reached max_t with a finite {OBJECTIVE}")
    return done.iloc[0]


def pick_baseline(trials: pd.DataFrame, name: str) -> pd.Series:
    """The baseline trial named ``name`` (whatever its stop reason: its config is what is retrained).

    Raises:
        ResultsError: naming the baselines the experiment has, when none is called ``name``.
    """
    rows = trials[trials[BASELINE] == name] if BASELINE in trials else trials.iloc[:0]
    if rows.empty:
        known = sorted(trials[BASELINE].dropna().unique()) if BASELINE in trials else []
        raise ResultsError(f"no baseline trial named {name!r} (the experiment has: {', '.join(known) or 'none'})")
    return rows.iloc[0]


def lineage(results: pd.DataFrame, trial_id: str) -> pd.DataFrame:
    """The result rows of the model ``trial_id`` ended with, epoch by epoch, through the trials that trained it:
    in a population search (pbt, pb2) a trial that continued another's checkpoint at epoch e (``PARENT_TRIAL``,
    ``PARENT_EPOCH`` on its first row after) owes its epochs up to e to that trial, and so on back. Each row keeps
    its own ``TRIAL_ID``. For any other search: the trial's own rows.
    """
    rows = results[results[TRIAL_ID] == trial_id].sort_values(ITERATION)
    if PARENT_TRIAL not in rows:
        return rows
    cloned = rows[rows[PARENT_TRIAL].notna()]
    if cloned.empty:
        return rows
    last = cloned.iloc[-1]
    epoch = int(last[PARENT_EPOCH])
    before = lineage(results[results[ITERATION] <= epoch], str(last[PARENT_TRIAL]))
    return pd.concat([before[before[ITERATION] <= epoch], rows[rows[ITERATION] > epoch]], ignore_index=True)
