"""One experiment directory read for analysis: its result rows, its trials, its settings and its space.

Only files are read (Parquet, YAML, JSON): no Ray, no torch. An experiment on object storage is read from a
local copy of its tables, settings, space, previews and retrained runs (:func:`local_copy`), refreshed at each
load. A search whose driver died leaves a stale or
missing ``TRIALS_FILE``; the trials are then completed from the result rows (:func:`results.trials.summarise_trials`,
the function the search writes the table with), and the experiment is marked partial with the reason, so an
analysis never silently passes off half a search as a whole one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from optuna.distributions import BaseDistribution

from p2m.names import (CONFIG_PREFIX, PREVIEWS_DIR, RESULTS_DIR, SETTINGS_FILE, SPACE_FILE, TRAIN_BEST_DIR, TRIALS_FILE,
                       VIEWS_DIR)
from results import storage
from results.schema import EXPERIMENT, ITERATION, STATUS, STOP_REASON, STOP_UNFINISHED, TRIAL_ID
from results.settings import SearchSettings, read_settings
from results.space import read_space
from results.parquet import ResultsError, read_results, read_trials
from results.trials import META, UNKNOWN, summarise_trials


@dataclass
class Experiment:
    name: str
    dir: Path
    results: pd.DataFrame  # one row per (trial, epoch), deduplicated
    trials: pd.DataFrame  # one row per trial (results.trials.summarise_trials)
    settings: SearchSettings
    space: dict[str, BaseDistribution] = field(default_factory=dict)  # config key -> Optuna distribution
    notes: list[str] = field(default_factory=list)  # why the experiment is partial, what is missing
    location: storage.Location | None = None  # where it lives, when not at ``dir`` (object storage)

    @property
    def partial(self) -> bool:
        return bool(self.notes)

    def previews(self, trial_id: str) -> list[Path]:
        return sorted((self.dir / PREVIEWS_DIR / str(trial_id) / PREVIEWS_DIR).glob("*.png"))


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read an experiment directory.

    Raises:
        ResultsError: naming the path, when it is not a directory, holds no readable result rows, or its
            settings or space file is missing or unreadable.
    """
    remote = storage.location(path) if storage.is_remote(path) else None
    exp = local_copy(remote) if remote else Path(path).expanduser()
    if not exp.is_dir():
        raise ResultsError(f"{exp}: no such experiment directory")
    results = read_results(exp)
    if results.empty:
        raise ResultsError(f"{exp / RESULTS_DIR}: the results table has no rows")
    try:
        settings = read_settings(exp)
    except ValueError as exc:
        raise ResultsError(str(exc)) from None
    notes: list[str] = []
    try:
        recorded = read_trials(exp)
    except ResultsError:
        recorded = pd.DataFrame(columns=[TRIAL_ID])
        notes.append(f"no {TRIALS_FILE}: the trials were rebuilt from the result rows (the driver died early)")
    meta = recorded[[c for c in recorded.columns if c == TRIAL_ID or c in META or c.startswith(CONFIG_PREFIX)]]
    trials = summarise_trials(results, meta, settings.max_t)
    missing = int((trials[STATUS] == UNKNOWN).sum())
    if missing and len(recorded):
        notes.append(f"{missing} trial(s) have result rows but no entry in {TRIALS_FILE} "
                     "(the driver died before writing it)")
    unfinished = int((trials[STOP_REASON] == STOP_UNFINISHED).sum())
    if unfinished:
        notes.append(f"{unfinished} trial(s) unfinished: the search did not end (resume it with "
                     "`p2m search resume`)")
    name = str(results[EXPERIMENT].iloc[0]) if EXPERIMENT in results else exp.name
    return Experiment(name=name, dir=exp.resolve(), results=results, trials=trials, settings=settings,
                      space=read_space(exp), notes=notes, location=remote)


COPIED = (RESULTS_DIR, VIEWS_DIR, TRIALS_FILE, SETTINGS_FILE, SPACE_FILE, PREVIEWS_DIR)  # what an analysis reads


def local_copy(loc: str | os.PathLike) -> Path:
    """A local directory holding what the analysis and ``train-best`` read of the experiment at ``loc``: ``loc``
    itself when local; for object storage, its ``COPIED`` entries and retrained runs downloaded into this
    machine's cache (:func:`results.storage.cache_dir`; Ray's trial directories, with their checkpoints,
    stay where they are).

    Raises:
        ResultsError: naming ``loc``, when it holds no experiment.
    """
    if not storage.is_remote(loc):
        return Path(loc).expanduser()
    loc = storage.location(loc)
    if not storage.exists(storage.join(loc, SETTINGS_FILE)):
        raise ResultsError(f"{loc}: not a p2m search experiment (no {SETTINGS_FILE})")
    retrained = tuple(d for d in storage.subdirs(loc) if d.startswith(TRAIN_BEST_DIR))
    return storage.download(loc, storage.cache_dir(loc, "experiments"), COPIED + retrained)


def last_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Each trial's last result row (its highest training_iteration), indexed by trial_id."""
    df = results.sort_values([TRIAL_ID, ITERATION], kind="stable")
    return df.groupby(TRIAL_ID, sort=True).tail(1).set_index(TRIAL_ID)
