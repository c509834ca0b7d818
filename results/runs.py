"""The ledger of retraining runs: one Parquet file per finished run, the race's record, and the tables read from them.

A retraining run (a race's or ``train-best``'s: :mod:`search.runs`) is one configuration, a source trial of the
search, trained with one seed to its last epoch and tested on a split. When it has been tested, its trial writes
``RUNS_DIR/RUNS_FINISHED_DIR/<trial_id>-seed<k>.parquet`` (one row per test view, with the run's columns and its
last-epoch validation figures) whole or not at all, before it reports its last epoch. That file is what
"finished" means: a run whose file exists is never trained again, whichever driver, phase or restart asks.
"""
from __future__ import annotations

import os
import re

import pandas as pd
import pyarrow as pa
import yaml

from p2m.names import METRICS, RACE_FILE, RUNS_DIR, RUNS_FINISHED_DIR, STAGES, stage_key, test_column
from p2m.yamlio import parse_yaml
from results import storage
from results.schema import ARM, EPOCHS, PHASE, ROUND, SEED, TEST_VIEWS, TRIAL_ID, VIEW_KEY
from results.parquet import ResultsError, read_table, write_table_atomic

RUN_KEY = (TRIAL_ID, SEED)  # what identifies a run: the configuration (its source trial) and the seed
_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")


def run_file(experiment_dir: str | os.PathLike, trial_id: str, seed: int) -> storage.Location:
    """Where run (``trial_id``, ``seed``) of the experiment records its test rows when it has finished."""
    if not _SAFE.match(str(trial_id)):
        raise ValueError(f"trial id {trial_id!r}: only letters, digits, '_', '.' and '-' may name a run")
    return storage.join(experiment_dir, RUNS_DIR, RUNS_FINISHED_DIR, f"{trial_id}-seed{int(seed)}.parquet")


def is_finished(experiment_dir: str | os.PathLike, trial_id: str, seed: int) -> bool:
    return storage.is_file(run_file(experiment_dir, trial_id, seed))


def write_run(experiment_dir: str | os.PathLike, trial_id: str, seed: int, rows: list[dict]) -> storage.Location:
    """Record a finished run: its per-view test rows (each with the run's columns), written atomically."""
    if not rows:
        raise ValueError(f"run {trial_id} seed {seed}: no test rows to record")
    path = run_file(experiment_dir, trial_id, seed)
    write_table_atomic(pa.Table.from_pylist(rows), path)
    return path


def read_runs(experiment_dir: str | os.PathLike, phase: str | None = None) -> pd.DataFrame:
    """Every finished run's per-view rows (of ``phase`` only, when given); an empty frame when there are none."""
    folder = storage.join(experiment_dir, RUNS_DIR, RUNS_FINISHED_DIR)
    files = storage.list_files(folder, suffix=".parquet") if storage.exists(folder) else []
    if not files:
        return pd.DataFrame(columns=[PHASE, ARM, TRIAL_ID, SEED, ROUND, *VIEW_KEY])
    views = pd.concat([read_table(f) for f in files], ignore_index=True)
    if phase is not None:
        views = views[views[PHASE] == phase]
    return views.sort_values([*RUN_KEY, *VIEW_KEY], kind="stable").reset_index(drop=True)


def summarise_runs(views: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its columns, its last-epoch validation figures and its mean test figures over its views
    (``test_column(stage, metric)``), and ``TEST_VIEWS``; sorted by trial and seed."""
    if views.empty:
        return pd.DataFrame(columns=[*RUN_KEY, PHASE, ARM, ROUND])
    per_view = [stage_key(s, m) for s in STAGES for m in METRICS]
    firsts = [c for c in views.columns if c not in per_view and c not in VIEW_KEY]
    grouped = views.groupby(list(RUN_KEY), sort=True)
    out = grouped[firsts].first().drop(columns=list(RUN_KEY), errors="ignore")
    means = grouped[per_view].mean().rename(columns={stage_key(s, m): test_column(s, m) for s in STAGES for m in METRICS})
    out = out.join(means)
    out[TEST_VIEWS] = grouped.size()
    return out.reset_index()


def check_epochs(views: pd.DataFrame, epochs: int) -> None:
    """Refuse finished runs trained for another number of epochs than ``epochs`` (their rows would be paired with
    runs of another budget)."""
    if views.empty or EPOCHS not in views:
        return
    other = views[views[EPOCHS] != epochs].drop_duplicates(list(RUN_KEY))
    if len(other):
        r = other.iloc[0]
        raise ValueError(f"run {r[TRIAL_ID]} seed {r[SEED]} finished after {r[EPOCHS]} epochs, not {epochs}: "
                         f"ask for {r[EPOCHS]} epochs, or for other seeds (--first-seed)")


def write_race(experiment_dir: str | os.PathLike, record: dict) -> storage.Location:
    """The race's record (candidates, seeds, rounds, dropped, winner) as YAML: plain values only."""
    path = storage.join(experiment_dir, RUNS_DIR, RACE_FILE)
    storage.write_bytes(path, yaml.safe_dump(record, sort_keys=False).encode())
    return path


def read_race(experiment_dir: str | os.PathLike) -> dict | None:
    """The race's record, or None when the experiment has not raced."""
    path = storage.join(experiment_dir, RUNS_DIR, RACE_FILE)
    if not storage.is_file(path):
        return None
    try:
        record = parse_yaml(storage.read_bytes(path), str(path))  # with p2m.yamlio's size, depth and alias limits
    except ValueError as exc:
        raise ResultsError(str(exc)) from None
    if not isinstance(record, dict) or "candidates" not in record:
        raise ResultsError(f"{path}: not a race record (no candidates)")
    return record


__all__ = ["RUN_KEY", "check_epochs", "is_finished", "read_race", "read_runs", "run_file", "summarise_runs",
           "write_race", "write_run"]
