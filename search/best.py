"""``p2m search train-best``: the verdict's runs. The configuration the search answers with (the race's winner,
else the search's best trial) and the baselines, each retrained with K seeds that neither the search nor the race
used (checked; overlapping seeds are refused), as Ray trials (:mod:`search.runs`), and tested on the test split.

The best trial, without a race, is the top of the one ranking rule (:mod:`results.trials`, which the console
leaderboard and the report use too): among trials that reached ``max_t``, the lowest last-epoch objective. Every
run's per-view test rows are in the ledger (:mod:`results.runs`); when the runs have finished, each arm's tables
are written in the layout the analysis pairs (``train_best/`` for the best, ``train_best_<baseline>/``): one row
per seed in ``TRAIN_BEST_RESULTS_FILE``, one per seed and test view in ``TRAIN_BEST_VIEWS_FILE``; previews and
curves in ``seed<k>/`` beside them. A killed ``train-best`` run again resumes its unfinished runs and never
retrains a finished one. The best trial of a population search (``pbt``, ``pb2``) is retrained with its schedule:
the weights its model trained with, epoch by epoch, through the trials whose checkpoints it continued
(:func:`results.trials.lineage`), the last ones kept past the schedule's end.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pyarrow as pa

from p2m.codec import to_plain, unflatten
from p2m.config import TrainConfig, from_dict
from p2m.names import (CONFIG_PREFIX, OBJECTIVE, SETTINGS_FILE, TRAIN_BEST_RESULTS_FILE,
                       TRAIN_BEST_VIEWS_FILE, test_column, train_best_dir)
from results import storage
from results.analysis.pareto import pick_on_front
from results.runs import check_epochs, read_race, read_runs, summarise_runs
from results.schema import (BASELINE, BEST_ARM, ERROR, ITERATION, LAST_OBJECTIVE, PHASE_RACE, PHASE_VERDICT, SEED,
                            STOP_ERRORED, STOP_REASON, TRIAL_ID)
from results.parquet import read_results, read_trials, write_table_atomic
from results.trials import lineage, pick_baseline, pick_best
from search.config import load_experiment_config
from search.runs import Run, run_phase
from search.schedulers import strategy

TRIAL_LAST = f"trial_{LAST_OBJECTIVE}"  # the retrained trial's own last objective in the search


def trial_config(row: pd.Series) -> TrainConfig:
    """The trial's full TrainConfig from its ``config.*`` columns."""
    flat = {key[len(CONFIG_PREFIX):]: to_plain(value) for key, value in row.items() if key.startswith(CONFIG_PREFIX)}
    return from_dict(unflatten(flat), base=TrainConfig(), source=f"trial {row[TRIAL_ID]}")


VERDICT_SEED_OFFSET = 2000  # train-best's seeds by default: base seed + 2000, + 2001, ... (the race's start at + 1000)


def train_best(experiment_dir: str | Path, epochs: int | None = None, seeds: int = 5, split: str = "test",
               previews: int = 2, baselines: tuple[str, ...] = (), pick: str | None = None,
               first_seed: int | None = None, verbose: int = 1) -> dict[str | None, pd.DataFrame]:
    """Retrain and test the configuration the search answers with and the baselines named ``baselines`` with
    ``seeds`` fresh seeds from ``first_seed`` on; returns (and writes) each arm's per-seed table, keyed as
    :func:`p2m.names.train_best_dir` is (None: the best). Ray must be initialised.

    The best is the race's winner when the experiment raced, else the trial of the Pareto front that ``pick``
    names (:func:`results.analysis.pareto.pick_on_front`), else the best trial. A baseline that errored in the search
    is not retrained (it would fail the same way); one that is the best itself is retrained once, as the best.

    Raises:
        ValueError: for bad arguments or seeds that the search or the race used.
    """
    exp = storage.location(experiment_dir)
    cfg = load_experiment_config(storage.join(exp, SETTINGS_FILE))
    trials = read_trials(exp)
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    epochs = epochs or cfg.max_t
    record = read_race(exp)
    if record is not None and pick is None:
        best = trials[trials[TRIAL_ID] == record["winner"]].iloc[0]
        how = f"the race's winner ({record['rounds']} rounds of fresh seeds)"
    elif pick is not None:
        best, how = pick_on_front(trials, pick, cfg.objective_modes()), f"picked by {pick!r}"
    else:
        best, how = pick_best(trials), "the search's best trial (no race: chosen on one seed)"
    arms = {BEST_ARM: str(best[TRIAL_ID])}
    for name in baselines:
        row = pick_baseline(trials, name)
        if row[STOP_REASON] == STOP_ERRORED:
            print(f"baseline {name}: not retrained, it errored in the search ({row[ERROR]})")
        elif row[TRIAL_ID] == best[TRIAL_ID]:
            print(f"baseline {name}: the best itself, retrained as the best")
        else:
            arms[name] = str(row[TRIAL_ID])
    first = cfg.base.seed + VERDICT_SEED_OFFSET if first_seed is None else first_seed
    verdict_seeds = list(range(first, first + seeds))
    raced = read_runs(exp, PHASE_RACE)
    check_fresh(verdict_seeds, {"the search": search_seeds(trials), "the race": set(raced[SEED].astype(int))},
                "train-best's")
    configs, changing = arms_for(exp, cfg, trials, list(arms.values()), epochs)
    print(f"best: trial {best[TRIAL_ID]}, {how}; last val CDx1000 in the search {1000 * best[LAST_OBJECTIVE]:.3f}")
    print(f"train-best: {len(arms)} arm(s) ({', '.join(arms)}) x {seeds} seeds {verdict_seeds[0]}..{verdict_seeds[-1]}"
          f", {epochs} epochs each, tested on {split}", flush=True)
    for arm, trial_id in arms.items():
        if configs[trial_id]["segments"]:
            print(f"  {arm}'s schedule: " + " | ".join(_describe(seg) for seg in configs[trial_id]["segments"]))
    runs = [Run(trial_id, seed, arm, PHASE_VERDICT) for arm, trial_id in arms.items() for seed in verdict_seeds]
    run_phase(cfg, exp, "train-best", runs, configs, epochs, split=split, previews=previews, changing=changing,
              verbose=verbose)
    views = read_runs(exp, PHASE_VERDICT)
    views = views[views[SEED].isin(verdict_seeds)]
    check_epochs(views, epochs)
    tables = {}
    for arm, trial_id in arms.items():
        mine = views[views[TRIAL_ID] == trial_id]
        table = summarise_runs(mine).assign(**{TRIAL_LAST: float(trials.set_index(TRIAL_ID).loc[trial_id, LAST_OBJECTIVE])})
        out = storage.join(exp, train_best_dir(None if arm == BEST_ARM else arm))
        write_table_atomic(pa.Table.from_pandas(table, preserve_index=False), storage.join(out, TRAIN_BEST_RESULTS_FILE))
        write_table_atomic(pa.Table.from_pandas(mine.reset_index(drop=True), preserve_index=False),
                           storage.join(out, TRAIN_BEST_VIEWS_FILE))
        tables[None if arm == BEST_ARM else arm] = table
        _summary(arm, table)
    return tables


def search_seeds(trials: pd.DataFrame) -> set[int]:
    """The seeds the search's trials trained with."""
    column = CONFIG_PREFIX + "seed"
    return set(pd.to_numeric(trials[column], errors="coerce").dropna().astype(int)) if column in trials else set()


def check_fresh(seeds: list[int], used: dict[str, set[int]], what: str) -> None:
    """Refuse ``seeds`` that any of ``used`` (who -> seeds) trained with: a verdict on a seed that chose the
    configuration would reuse its luck.

    Raises:
        ValueError: naming the seeds and who used them.
    """
    for who, taken in used.items():
        both = sorted(set(seeds) & set(taken))
        if both:
            raise ValueError(f"{what} seeds {both[:5]} were used by {who}: they must be fresh "
                             "(choose others with --first-seed)")


def arms_for(exp, cfg, trials: pd.DataFrame, trial_ids: list[str], epochs: int) -> tuple[dict, tuple[str, ...]]:
    """What :func:`search.trainable.train_run` trains for each of ``trial_ids``: ``{trial_id: {"config": its
    TrainConfig as a dict, for ``epochs`` epochs, "segments": its weight schedule or []}}``, and the config keys the
    schedules change."""
    scheduling = strategy(cfg.scheduler)
    population = scheduling.shares_checkpoints
    results = read_results(exp) if population else None
    keys = scheduling.changing_keys(cfg.space())
    rows = trials.set_index(TRIAL_ID)
    arms = {}
    for trial_id in trial_ids:
        row = rows.loc[trial_id].copy()
        row[TRIAL_ID] = trial_id
        config = trial_config(row)
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, max_epochs=epochs))
        segments = []
        if population and pd.isna(row[BASELINE]):
            segments = [[end, values] for end, values in weight_segments(results, trial_id, keys, epochs)]
        arms[trial_id] = {"config": to_plain(config.to_dict()), "segments": segments}
    return arms, tuple(keys)


def weight_segments(results: pd.DataFrame, trial_id: str, keys: tuple[str, ...],
                    epochs: int) -> list[tuple[int, dict]]:
    """The values of config ``keys`` that trial ``trial_id``'s model trained with, through its lineage, as
    segments of epochs with the same values: ``[(last epoch, {key: value}), ...]`` covering epochs 1..``epochs``
    (the lineage's last values continue past its end; a lineage longer than ``epochs`` is cut)."""
    rows = lineage(results, trial_id).drop_duplicates(ITERATION, keep="last")
    columns = [CONFIG_PREFIX + key for key in keys if CONFIG_PREFIX + key in rows]
    if rows.empty or not columns:
        return [(epochs, {})]
    segments: list[tuple[int, dict]] = []
    for _, row in rows[rows[ITERATION] <= epochs].iterrows():
        values = {c[len(CONFIG_PREFIX):]: to_plain(row[c]) for c in columns}
        if segments and segments[-1][1] == values:
            segments[-1] = (int(row[ITERATION]), values)
        else:
            segments.append((int(row[ITERATION]), values))
    segments[-1] = (epochs, segments[-1][1])
    return segments


def _describe(segment: tuple[int, dict]) -> str:
    end, values = segment
    return f"to epoch {end}: " + ", ".join(f"{k.split('.')[-1]} {v:.3g}" for k, v in values.items())


def _summary(arm: str, df: pd.DataFrame) -> None:
    val = df[OBJECTIVE] * 1000
    spread = f" ± {val.std(ddof=1):.3f}" if len(df) > 1 else ""
    test = df[test_column(3, "cd_x1000")]
    test_spread = f" ± {test.std(ddof=1):.3f}" if len(df) > 1 else ""
    print(f"  {arm}: {len(df)} seeds, val CDx1000 {val.mean():.3f}{spread} (in the search "
          f"{1000 * df[TRIAL_LAST].iloc[0]:.3f}); test stage-3 CDx1000 {test.mean():.3f}{test_spread}, F@tau "
          f"{df[test_column(3, 'f_tau')].mean():.2f}" + ("" if math.isfinite(test.mean()) else " (not finite)"))
