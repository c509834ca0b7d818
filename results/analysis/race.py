"""The elimination rule of a race: which candidate configurations survive each round of seeds.

A race (F-race, Birattari et al. 2002; the intensification of SMAC, Hutter et al. 2011) trains every surviving
candidate once per round, all with the round's seed (common random numbers), so the runs pair by seed. After
each complete round r >= ``min_rounds``, the leader is the survivor with the lowest mean over the seeds so
far, and every other survivor is tested against it with a one-sided paired t-test on its per-seed differences
(is it worse?); the p-values of the round are Holm-adjusted over the survivors compared, and a candidate whose
adjusted p is below alpha is dropped in that round (irace's ``t-test-holm`` rule). Values are lower-is-better:
the stage-3 validation CD at the last epoch.

These are pure functions of the table of finished runs: :func:`race_state` replays the rounds from it, so a
driver that launches trials (and may restart) calls it after each result and :func:`next_runs` for what to
launch next.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from results.analysis.paired import ALPHA, holm
from results.schema import ROUND, SEED

CANDIDATE, VALUE = "candidate", "value"  # a race run's candidate (a trial id) and its validation figure
RUN_COLUMNS = (CANDIDATE, ROUND, SEED, VALUE)  # one row per finished run of a race
ROUNDING = 1e-12  # relative: a per-seed difference that varies less than this is constant (float64 values)


@dataclass(frozen=True)
class RaceState:
    """Where a race stands after replaying its finished runs.

    Attributes:
        round: the number of rounds every survivor has completed.
        survivors: the candidates still racing, in the order of ``candidates``.
        dropped: candidate -> (the round it was dropped in, a one-line reason), in the order dropped.
        leader: the survivor with the lowest mean over the seeds the survivors share (the only survivor when
            one is left); None before the first complete round.
        done: one survivor is left, or ``rounds`` rounds are complete.
        winner: when done, the survivor with the lowest mean over the race's seeds; else None.
        means: candidate -> its mean value over its seeds (NaN before its first run).
        rounds: the race's number of rounds.
        seeds: the seed of each complete round, round 1 first.
        partial: survivors that already have a row in round ``round + 1``.
        ignored: rows of dropped candidates after the round they were dropped in (a driver that ran ahead),
            which the rule does not read.
    """

    round: int
    survivors: tuple[str, ...]
    dropped: dict[str, tuple[int, str]]
    leader: str | None
    done: bool
    winner: str | None
    means: dict[str, float]
    rounds: int
    seeds: tuple[int, ...]
    partial: tuple[str, ...]
    ignored: int


def race_state(runs: pd.DataFrame, candidates: Sequence[str], rounds: int, min_rounds: int = 3,
               alpha: float = ALPHA) -> RaceState:
    """Replay a race's rounds from its finished runs, dropping candidates by the rule of this module.

    Args:
        runs: one row per finished run, with the columns of :data:`RUN_COLUMNS`: candidate (str), round (int,
            1-based), seed (int; the same for every candidate of a round) and value (float, finite, lower is
            better). An empty table is a race that has not started.
        candidates: the race's candidates, in the order states list them.
        rounds: the most rounds the race runs.
        min_rounds: the first round after which candidates may be dropped; at least 2 (a t-test on one
            difference has no variance).
        alpha: the family-wise error rate of each round's tests.

    Returns:
        The :class:`RaceState`. Replaying the same table gives the same state.
    """
    candidates = _validate_race(candidates, rounds, min_rounds, alpha)
    table = _runs_by_candidate(runs, candidates, rounds)
    survivors, dropped, seeds = list(candidates), {}, []
    for r in range(1, rounds + 1):
        if any(r not in table[c] for c in survivors):
            break  # a partially complete round is not judged
        seeds.append(table[survivors[0]][r][0])
        if r >= min_rounds and len(survivors) > 1:
            for c, reason in _eliminate(table, survivors, r, alpha).items():
                dropped[c] = (r, reason)
                survivors.remove(c)
    done_round = len(seeds)
    for c, (r, _) in dropped.items():
        table[c] = {q: run for q, run in table[c].items() if q <= r}
    ignored = len(runs) - sum(len(t) for t in table.values())  # each row is one entry of the table
    leader = _leader(table, survivors, done_round)
    done = len(survivors) == 1 or done_round == rounds
    means = {c: float(np.mean([table[c][q][1] for q in sorted(table[c])])) if table[c] else float("nan")
             for c in candidates}  # summed in round order, whatever the order of the rows
    partial = tuple(c for c in survivors if done_round + 1 in table[c]) if not done else ()
    return RaceState(round=done_round, survivors=tuple(survivors), dropped=dropped, leader=leader, done=done,
                     winner=leader if done else None, means=means, rounds=rounds, seeds=tuple(seeds),
                     partial=partial, ignored=ignored)


def next_runs(state: RaceState, candidates: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int, int]]:
    """What the race runs next: each survivor without a row yet in the next round, with that round's seed.

    Args:
        state: the race's state (:func:`race_state`).
        candidates: the race's candidates, in the order to launch them.
        seeds: the race's seeds; round r uses ``seeds[r - 1]``.

    Returns:
        [(candidate, seed, round)], empty when the race is done.
    """
    seeds = list(seeds)
    if state.rounds > len(seeds):
        raise ValueError(f"rounds ({state.rounds}) must not exceed len(seeds) ({len(seeds)}): round r runs "
                         f"seeds[r - 1]")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct (runs pair by seed), got {seeds}")
    strays = [c for c in state.survivors if c not in candidates]
    if strays:
        raise ValueError(f"the state's survivors {strays} are not among candidates {list(candidates)}")
    if tuple(seeds[:state.round]) != state.seeds:
        raise ValueError(f"the race's rounds ran seeds {list(state.seeds)}, but seeds begins "
                         f"{seeds[:state.round]}")
    if state.done:
        return []
    r = state.round + 1
    return [(c, seeds[r - 1], r) for c in candidates if c in state.survivors and c not in state.partial]


def _validate_race(candidates: Sequence[str], rounds: int, min_rounds: int, alpha: float) -> tuple[str, ...]:
    candidates = tuple(candidates)
    if not candidates:
        raise ValueError("candidates must name at least one candidate, got none")
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"candidates must be distinct, got {list(candidates)}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds!r}")
    if min_rounds < 2:
        raise ValueError(f"min_rounds must be at least 2 (a paired t-test needs two differences), "
                         f"got {min_rounds!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    return candidates


def _runs_by_candidate(runs: pd.DataFrame, candidates: tuple[str, ...], rounds: int) -> dict[str, dict]:
    """candidate -> {round: (seed, value)}, after checking the table."""
    table = {c: {} for c in candidates}
    if len(runs) == 0:
        return table
    missing = [c for c in RUN_COLUMNS if c not in runs.columns]
    if missing:
        raise ValueError(f"runs must have the columns {list(RUN_COLUMNS)}; missing {missing}")
    strays = sorted(set(runs[CANDIDATE]) - set(candidates))
    if strays:
        raise ValueError(f"runs name candidates {strays} that are not among candidates {list(candidates)}")
    bad = sorted(set(runs[ROUND]) - set(range(1, rounds + 1)))
    if bad:
        raise ValueError(f"runs' rounds must be integers from 1 to rounds ({rounds}), got {bad}")
    if not np.isfinite(runs[VALUE].to_numpy(dtype=float)).all():
        raise ValueError("runs' values must be finite (record a diverged run as a large value of your choosing)")
    round_seed = {}
    for c, r, seed, value in runs[list(RUN_COLUMNS)].itertuples(index=False):
        r, seed = int(r), int(seed)
        if round_seed.setdefault(r, seed) != seed:
            raise ValueError(f"every run of a round must use the same seed, round {r} ran seeds "
                             f"{round_seed[r]} and {seed}")
        if r in table[c]:
            raise ValueError(f"runs hold candidate {c!r} twice in round {r}")
        table[c][r] = (seed, float(value))
    for c, by_round in table.items():
        seeds = [s for s, _ in by_round.values()]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"runs hold candidate {c!r} twice with one seed: rounds pair by seed")
    return table


def _eliminate(table: dict[str, dict], survivors: list[str], r: int, alpha: float) -> dict[str, str]:
    """The survivors the test after round r drops, with their reasons (rounds 1..r, which all survivors ran)."""
    values = np.array([[table[c][q][1] for q in range(1, r + 1)] for c in survivors])  # (S, r)
    lead = survivors.index(_leader(table, survivors, r))
    others = [i for i in range(len(survivors)) if i != lead]
    diffs = values[others] - values[lead]  # (S - 1, r)
    p = holm(_worse_p(values[others], values[lead]))
    return {survivors[i]: f"worse than the leader {survivors[lead]} by {d.mean():+.4g} on average over {r} seeds "
                          f"(one-sided paired t-test, Holm-adjusted p = {q:.3g} < {alpha})"
            for i, d, q in zip(others, diffs, p) if q < alpha}


def _worse_p(values: np.ndarray, leader: np.ndarray) -> np.ndarray:
    """One-sided paired t-test p of "this row is worse (higher) than the leader", for float (M, r) values
    against the leader's float (r,).

    A difference constant to within rounding (``ROUNDING`` of the values' magnitude), where the t statistic is
    undefined (scipy gives NaN, or noise from the last bits), gives p = 0 when it is positive and 1 otherwise.
    """
    leader = np.broadcast_to(leader, values.shape)  # (M, r)
    d = values - leader  # (M, r)
    tol = ROUNDING * np.maximum(np.abs(values).max(axis=1), np.abs(leader).max(axis=1))  # (M,)
    constant = np.ptp(d, axis=1) <= tol
    p = np.where(d.mean(axis=1) > tol, 0.0, 1.0)
    if not constant.all():
        p[~constant] = stats.ttest_rel(values[~constant], leader[~constant], axis=1, alternative="greater").pvalue
    return p


def _leader(table: dict[str, dict], survivors: list[str], done_round: int) -> str | None:
    """The survivor with the lowest mean over rounds 1..done_round (the first of equal means)."""
    if len(survivors) == 1:
        return survivors[0]
    if done_round == 0:
        return None
    means = [np.mean([table[c][q][1] for q in range(1, done_round + 1)]) for c in survivors]
    return survivors[int(np.argmin(means))]
