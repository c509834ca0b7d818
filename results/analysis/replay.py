"""Replay early stopping on the full curves of a FIFO search: what would ASHA (or successive halving, or
asynchronous Hyperband) have spent, and would it have kept the trial FIFO found best?

Every trial's curve is known to ``max_t``, so a scheduler can be run counterfactually: trials start in a
random order, ``concurrency`` at a time, one epoch per time unit; at each epoch the scheduler decides, as
Ray Tune's would, from the values reported so far. Over many orderings this gives, for a grid of grace
periods and reduction factors: the trial-epochs spent against FIFO's, the share of orderings in which FIFO's
winner survives to ``max_t``, and the regret of the trial the scheduler would pick (its final objective
against the winner's). :func:`joint_goal` judges a goal of several conditions on such a table resampled
(one row per resample and setting), all conditions together in each resample. The schedulers, re-implemented
here without Ray:

- ``asha``: Ray's ``AsyncHyperBandScheduler`` with one bracket: milestones ``grace * rf**k`` (as many as
  ``int(log(max_t / grace) / log(rf)) + 1``); a trial meeting a milestone it has not recorded is stopped when
  it is worse than the ``1 - 1/rf`` quantile of the trials already recorded there, then recorded.
- ``hyperband``: the same with several brackets (bracket ``s`` starts at ``grace * rf**s``), a trial's
  bracket drawn as Ray draws it (probability proportional to ``e**(rungs - max rungs)``).
- ``sha``: synchronous successive halving: every trial runs to the first rung, the best ``1/rf`` (rounded
  up) go on to the next, and so on to ``max_t``; it waits for all trials, so the ordering does not matter.
"""
from __future__ import annotations

import heapq
import math
import operator
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from p2m.names import ASHA

ALGORITHMS = (ASHA, "hyperband", "sha")  # ASHA as the search runs it, and two synchronous relatives

# joint_goal's rule, fixed before it was first run (issue 27): a setting meets a goal when all its conditions
# hold together in at least MET_SHARE of the resamples, and misses it when they do in at most NOT_MET_SHARE
MET_SHARE = 0.95
NOT_MET_SHARE = 0.05
MET, NOT_MET, INCONCLUSIVE = "met", "NOT met", "inconclusive"
JOINT_SHARE = "joint_share"
RESAMPLES = "resamples"
POINT_MET = "point_met"
RESAMPLE = "resample"
COMPARISONS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def milestones(max_t: int, grace: int, rf: float, bracket: int = 0) -> list[float]:
    """Ray's rung milestones of one bracket, ascending (it computes ``MAX_RUNGS`` this way)."""
    count = int(math.log(max_t / grace) / math.log(rf) - bracket + 1)
    return sorted(grace * rf ** (k + bracket) for k in range(count))


def replay_asha(curves: np.ndarray, order: np.ndarray, grace: int, rf: float, concurrency: int,
                brackets: int = 1, rng: np.random.Generator | None = None) -> tuple[int, np.ndarray]:
    """Run asynchronous successive halving over ``curves`` (trial x epoch, lower is better, epoch t in
    column t - 1) with trials starting in ``order``. Returns (trial-epochs spent, bool per trial: reached
    max_t)."""
    n, max_t = curves.shape
    rungs = [milestones(max_t, grace, rf, s) for s in range(brackets)]
    recorded = [{m: {} for m in bracket} for bracket in rungs]
    if brackets > 1:
        sizes = np.array([len(b) for b in rungs], dtype=float)
        p = np.e ** (sizes - sizes.max())
        bracket_of = (rng or np.random.default_rng(0)).choice(brackets, size=n, p=p / p.sum())
    else:
        bracket_of = np.zeros(n, dtype=int)
    finished = np.zeros(n, dtype=bool)
    spent = 0
    queue = list(order)
    running: list[tuple[int, int, int]] = []  # (time of the epoch's end, slot tie-break, trial)
    epoch = np.zeros(n, dtype=int)
    clock = 0
    for slot in range(min(concurrency, n)):
        heapq.heappush(running, (1, slot, queue.pop(0)))
    while running:
        clock, slot, trial = heapq.heappop(running)
        epoch[trial] += 1
        spent += 1
        t = epoch[trial]
        stop = t >= max_t
        if not stop:
            b = bracket_of[trial]
            for milestone in reversed(rungs[b]):  # Ray checks the highest milestone first
                if t < milestone or trial in recorded[b][milestone]:
                    continue
                values = recorded[b][milestone]
                reward = -curves[trial, t - 1]
                if values and reward < np.nanpercentile(list(values.values()), (1 - 1 / rf) * 100):
                    stop = True
                values[trial] = reward
                break
        if t >= max_t:
            finished[trial] = True
        if stop:
            if queue:
                heapq.heappush(running, (clock + 1, slot, queue.pop(0)))
        else:
            heapq.heappush(running, (clock + 1, slot, trial))
    return spent, finished


def replay_sha(curves: np.ndarray, grace: int, rf: float) -> tuple[int, np.ndarray]:
    """Synchronous successive halving. Returns (trial-epochs spent, bool per trial: reached max_t)."""
    n, max_t = curves.shape
    alive = np.arange(n)
    done_epochs = 0
    spent = 0
    for rung in [m for m in milestones(max_t, grace, rf) if m < max_t] + [max_t]:
        epochs = math.ceil(rung)
        spent += len(alive) * (epochs - done_epochs)
        done_epochs = epochs
        if epochs >= max_t:
            break
        keep = max(1, math.ceil(len(alive) / rf))
        alive = alive[np.argsort(curves[alive, epochs - 1], kind="stable")[:keep]]
    finished = np.zeros(n, dtype=bool)
    finished[alive] = True
    return spent, finished


def replay(curves: pd.DataFrame, graces: list[int], factors: list[float], concurrency: int = 2,
           orderings: int | list[np.ndarray] = 200, seed: int = 0,
           algorithms: tuple[str, ...] = ALGORITHMS) -> pd.DataFrame:
    """The replay table: one row per algorithm, grace period and reduction factor.

    Args:
        curves: trial x epoch (1..max_t) objective, lower is better (:func:`results.analysis.fidelity.full_curves`).
        orderings: how many random trial orderings (seeded), or the orderings themselves.

    Columns: algorithm, grace_period, reduction_factor, orderings, epochs_share (mean trial-epochs / FIFO's),
    winner_kept (share of orderings whose FIFO winner reached max_t), regret_mean and regret_p90 (the picked
    trial's final objective / the winner's - 1), trials, max_t.
    """
    values = curves.to_numpy(dtype=float)
    n, max_t = values.shape
    final = values[:, -1]
    winner = int(np.argmin(final))
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(n) for _ in range(orderings)] if isinstance(orderings, int) else list(orderings)
    rows = []
    for algorithm in algorithms:
        for grace in graces:
            for rf in factors:
                if grace >= max_t:
                    continue
                costs, kept, regrets = [], [], []
                for i, order in enumerate(orders if algorithm != "sha" else orders[:1]):
                    if algorithm == "sha":
                        spent, finished = replay_sha(values, grace, rf)
                    else:
                        spent, finished = replay_asha(values, order, grace, rf, concurrency,
                                                      brackets=3 if algorithm == "hyperband" else 1,
                                                      rng=np.random.default_rng([seed, i]))
                    picked = np.flatnonzero(finished)[np.argmin(final[finished])]
                    costs.append(spent)
                    kept.append(bool(finished[winner]))
                    regrets.append(final[picked] / final[winner] - 1)
                rows.append({"algorithm": algorithm, "grace_period": grace, "reduction_factor": rf,
                             "orderings": len(costs), "epochs_share": float(np.mean(costs)) / (n * max_t),
                             "winner_kept": float(np.mean(kept)), "regret_mean": float(np.mean(regrets)),
                             "regret_p90": float(np.percentile(regrets, 90)), "trials": n, "max_t": max_t})
    return pd.DataFrame(rows)


def joint_goal(draws: pd.DataFrame, conditions: Sequence[tuple[str, str, float]], by: Sequence[str],
               point: pd.DataFrame | None = None, resample: str = RESAMPLE) -> pd.DataFrame:
    """Judge a goal of several conditions per setting, on all its conditions together in each resample.

    The rule, decided before it was first run (issue 27): per setting (a group of ``by``), the joint share is
    the share of resamples in which every condition holds at once. The setting is ``"met"`` when the joint
    share is >= ``MET_SHARE`` (0.95), ``"NOT met"`` when it is <= ``NOT_MET_SHARE`` (0.05), and
    ``"inconclusive"`` otherwise. Over settings (:func:`overall_verdict`), the goal is met when any setting
    is met, NOT met when every setting is NOT met, and inconclusive otherwise. A condition on a NaN does not
    hold. Two conditions that each hold in 60% of the resamples, never in the same one, have joint share 0:
    NOT met, which their separate intervals could not say.

    Args:
        draws: one row per resample and setting: the ``by`` columns, ``resample`` (the resample's id) and
            every column a condition names.
        conditions: (column, comparison, threshold), comparison one of ``<=``, ``<``, ``>=``, ``>``; e.g.
            ``[("winner_kept", ">=", 0.9), ("epochs_share", "<=", 0.4)]``.
        by: the columns that name a setting.
        point: the un-resampled table (one row per setting, the same columns but ``resample``), or None.

    Returns:
        One row per setting, in the order they first appear in ``draws``: the ``by`` columns, ``resamples``,
        one column per condition (named ``"<column> <comparison> <threshold>"``: the share of resamples in
        which it holds on its own), ``joint_share``, ``verdict`` and, with ``point``, ``point_met`` (whether
        all conditions hold on the un-resampled table).
    """
    by = list(by)
    labels = _validate_conditions(conditions, draws, "draws")
    missing = [c for c in by + [resample] if c not in draws.columns]
    if missing:
        raise ValueError(f"draws must have the columns {by + [resample]}, missing {missing}")
    if draws.empty:
        raise ValueError("draws must hold at least one resample, got an empty table")
    twice = draws.duplicated(by + [resample])
    if twice.any():
        raise ValueError(f"draws must have one row per resample and setting, got {int(twice.sum())} repeated "
                         f"({by + [resample]})")
    held = _holds(draws, conditions)  # (rows, conditions)
    frame = draws[by].copy()
    frame[labels] = held
    frame[JOINT_SHARE] = held.all(axis=1)
    groups = frame.groupby(by, sort=False)
    # held / n is rounded once, so a share of exactly 95/100 equals MET_SHARE and the bounds are inclusive
    table = groups[labels + [JOINT_SHARE]].sum().astype(int)
    counts = groups.size()
    table = table.div(counts, axis=0)
    table.insert(0, RESAMPLES, counts)
    table["verdict"] = [_verdict(share) for share in table[JOINT_SHARE]]
    if point is not None:
        _validate_conditions(conditions, point, "point")
        if point.duplicated(by).any() or not set(table.index).issubset(set(point.set_index(by).index)):
            raise ValueError(f"point must have one row per setting of draws ({by}), got {len(point)} rows")
        met = pd.Series(_holds(point, conditions).all(axis=1), index=point.set_index(by).index)
        table[POINT_MET] = met.reindex(table.index).to_numpy()
    return table.reset_index()


def overall_verdict(verdicts: Iterable[str]) -> str:
    """A goal over settings: met when any setting is met, NOT met when every one is NOT met, else
    inconclusive (each setting's verdict from :func:`joint_goal`)."""
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("verdicts must hold at least one setting's verdict, got none")
    unknown = sorted(set(verdicts) - {MET, NOT_MET, INCONCLUSIVE})
    if unknown:
        raise ValueError(f"verdicts must be {MET!r}, {NOT_MET!r} or {INCONCLUSIVE!r}, got {unknown}")
    if MET in verdicts:
        return MET
    return NOT_MET if all(v == NOT_MET for v in verdicts) else INCONCLUSIVE


def _verdict(share: float) -> str:
    if share >= MET_SHARE:
        return MET
    return NOT_MET if share <= NOT_MET_SHARE else INCONCLUSIVE


def _holds(table: pd.DataFrame, conditions: Sequence[tuple[str, str, float]]) -> np.ndarray:
    """bool (rows, conditions): whether each condition holds on each row (False on NaN)."""
    return np.column_stack([COMPARISONS[op](table[column].to_numpy(dtype=float), threshold)
                            for column, op, threshold in conditions])


def _validate_conditions(conditions: Sequence[tuple[str, str, float]], table: pd.DataFrame, name: str) -> list[str]:
    """The conditions' labels, after checking each is (column of ``table``, known comparison, threshold)."""
    if not conditions:
        raise ValueError("conditions must hold at least one (column, comparison, threshold), got none")
    labels = []
    for condition in conditions:
        if len(condition) != 3:
            raise ValueError(f"each condition must be (column, comparison, threshold), got {condition!r}")
        column, op, threshold = condition
        if op not in COMPARISONS:
            raise ValueError(f"comparison must be one of {list(COMPARISONS)}, got {op!r}")
        if column not in table.columns:
            raise ValueError(f"{name} must have the column {column!r} a condition names")
        labels.append(f"{column} {op} {threshold:g}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"conditions must differ, got {labels}")
    return labels
