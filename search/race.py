"""``p2m search race``: the search's K best trials and ``published`` retrained in rounds on fresh seeds, until a
paired test leaves one or the seeds are spent (F-race, SMAC's intensification).

Round r trains every surviving candidate once with the race's r-th seed (the same seed for all: runs pair by
seed), as Ray trials (:mod:`search.runs`). After each round from ``min_rounds`` on, a candidate that a one-sided paired
test over the seeds, Holm-corrected over the candidates compared, finds worse than the leader is dropped
(:mod:`results.analysis.race`, which judges on each run's last-epoch validation CD: the test split stays for the
verdict). The winner is the survivor with the lowest mean over the race's seeds. The race's seeds are never the search's
(its trials all trained with the base seed) and never ``train-best``'s; its state is replayed from the finished
runs every time, so a killed race resumes where it stood, and its record (``RUNS_DIR/RACE_FILE``) says who won.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from p2m.names import OBJECTIVE, SETTINGS_FILE
from results import storage
from results.analysis.race import CANDIDATE, RUN_COLUMNS, VALUE, next_runs, race_state
from results.runs import read_runs, summarise_runs, write_race, check_epochs
from results.schema import BASELINE, PHASE_RACE, REFERENCE, ROUND, SEED, TRIAL_ID
from results.parquet import read_trials
from results.trials import completed
from search.best import arms_for, check_fresh, search_seeds
from search.config import load_experiment_config
from search.runs import Run, run_phase

RACE_SEED_OFFSET = 1000  # the race's seeds: base seed + 1000, + 1001, ...
MIN_ROUNDS = 3


def race(experiment_dir: str | Path, top: int, seeds: int, min_rounds: int = MIN_ROUNDS, verbose: int = 1) -> dict:
    """Race the ``top`` best trials of the search and the ``published`` baseline over at most ``seeds`` rounds;
    returns (and writes) the race's record. Ray must be initialised.

    Raises:
        ValueError: for bad arguments, or a search with fewer than two candidates.
    """
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    if seeds < min_rounds or min_rounds < 2:
        raise ValueError(f"--seeds ({seeds}) must be >= --min-rounds ({min_rounds}), which must be >= 2")
    exp = storage.location(experiment_dir)
    cfg = load_experiment_config(storage.join(exp, SETTINGS_FILE))
    trials = read_trials(exp)
    candidates, labels = _candidates(trials, top)
    if len(candidates) < 2:
        raise ValueError(f"{exp}: {len(candidates)} trial(s) reached max_t with a finite {OBJECTIVE}; a race needs two")
    race_seeds = [cfg.base.seed + RACE_SEED_OFFSET + r for r in range(seeds)]
    check_fresh(race_seeds, {"the search": search_seeds(trials)}, "the race's")
    arms, changing = arms_for(exp, cfg, trials, candidates, cfg.max_t)
    print(f"race: {len(candidates)} candidates ({', '.join(labels[c] for c in candidates)}), at most {seeds} rounds "
          f"on seeds {race_seeds[0]}..{race_seeds[-1]}, a candidate dropped from round {min_rounds} on", flush=True)
    while True:
        values = _values(exp, cfg.max_t)
        state = race_state(values, candidates, seeds, min_rounds)
        if state.round:
            print(_round_line(state, labels), flush=True)
        if state.done:
            break
        next_runs(state, candidates, race_seeds)  # checks the rounds so far ran the race's seeds
        r = state.round + 1
        # every survivor's run of the round, those finished too (run_phase skips them): the phase's name is the
        # same after a killed driver, so the round's experiment is restored and its unfinished runs continue
        runs = [Run(c, race_seeds[r - 1], labels[c], PHASE_RACE, r) for c in state.survivors]
        run_phase(cfg, exp, f"race-r{r:02d}", runs, arms, cfg.max_t, split="", changing=changing, verbose=verbose)
    record = {"candidates": list(candidates), "labels": {c: labels[c] for c in candidates}, "seeds": race_seeds,
              "min_rounds": min_rounds, "rounds": int(state.round), "winner": state.winner,
              "survivors": list(state.survivors),
              "dropped": {c: {ROUND: int(r), "reason": reason} for c, (r, reason) in state.dropped.items()},
              "means": {c: float(v) for c, v in state.means.items()}}
    write_race(exp, record)
    print(f"race winner: {labels[state.winner]} (mean val CDx1000 {1000 * state.means[state.winner]:.3f} over "
          f"{state.round} seeds)", flush=True)
    return record


def _candidates(trials: pd.DataFrame, top: int) -> tuple[list[str], dict[str, str]]:
    """The ``top`` best trials that reached max_t with a finite objective, and ``published`` when it did too;
    each with its label (a baseline's name, else ``trial <id>``)."""
    done = completed(trials)
    chosen = list(done[TRIAL_ID].head(top))
    reference = done[done[BASELINE] == REFERENCE][TRIAL_ID]
    if len(reference) and reference.iloc[0] not in chosen:
        chosen.append(reference.iloc[0])
    labels = {t: (b if isinstance(b, str) else f"trial {t}") for t, b in zip(done[TRIAL_ID], done[BASELINE])}
    return [str(t) for t in chosen], labels


def _values(exp, epochs: int) -> pd.DataFrame:
    """The race's finished runs as (candidate, round, seed, value): each run's last-epoch validation CD."""
    views = read_runs(exp, PHASE_RACE)
    check_epochs(views, epochs)
    runs = summarise_runs(views)
    if runs.empty:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    return pd.DataFrame({CANDIDATE: runs[TRIAL_ID].astype(str), ROUND: runs[ROUND].astype(int),
                         SEED: runs[SEED].astype(int), VALUE: runs[OBJECTIVE].astype(float)})


def _round_line(state, labels: dict[str, str]) -> str:
    means = ", ".join(f"{labels[c]} {1000 * state.means[c]:.3f}" for c in state.survivors)
    dropped = [f"{labels[c]} ({reason})" for c, (r, reason) in state.dropped.items() if r == state.round]
    return (f"race round {state.round}: mean val CDx1000 {means}" + (f"; dropped {', '.join(dropped)}" if dropped else "")
            + ("; done" if state.done else ""))


__all__ = ["race", "RACE_SEED_OFFSET", "MIN_ROUNDS"]
