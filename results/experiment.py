"""One experiment directory read for analysis: its result rows, its trials, its settings and its space.

Only files are read (Parquet, YAML, JSON): no Ray, no torch. A search whose driver died leaves a stale or
missing ``trials.parquet``; the trials are then completed from the result rows, and the experiment is
marked partial with the reason, so an analysis never silently passes off half a search as a whole one.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from results.schema import (BASELINE, EXPERIMENT, ITERATION, ITERATIONS, OBJECTIVE, PREVIEWS_DIR, SETTINGS_FILE,
                            SPACE_FILE, STATUS, STOP_COMPLETED, STOP_EARLY, STOP_ERRORED, STOP_REASON,
                            STOP_UNFINISHED, TRIAL_ID, TRIALS_FILE)
from results.store import ResultsError, read_results, read_trials


@dataclass(frozen=True)
class Settings:
    """What the analysis needs of the search's settings (``search_config.yaml``)."""
    scheduler: str = "unknown"  # asha | fifo
    algorithm: str = "unknown"  # tpe | random
    max_t: int = 0  # epochs a trial runs when nothing stops it
    grace_period: int = 1
    reduction_factor: float = 2.0
    cpu: float = 1.0  # per trial
    gpu: float = 0.0  # per trial (a fraction when trials share a GPU)
    num_samples: int = 0

    def rungs(self) -> list[int]:
        """ASHA's milestones below ``max_t`` (Ray's: grace_period * reduction_factor**k), ascending."""
        if self.scheduler != "asha" or self.max_t < 1:
            return []
        out, k = [], 0
        while (m := self.grace_period * self.reduction_factor ** k) < self.max_t:
            out.append(int(round(m)))
            k += 1
        return out


@dataclass
class Experiment:
    name: str
    dir: Path
    results: pd.DataFrame  # one row per (trial, epoch), deduplicated
    trials: pd.DataFrame  # one row per trial
    settings: Settings
    space: dict = field(default_factory=dict)  # key -> {"log_uniform": [lo, hi]} | {"choice": [...]}
    notes: list[str] = field(default_factory=list)  # why the experiment is partial, what is missing

    @property
    def partial(self) -> bool:
        return bool(self.notes)

    def previews(self, trial_id: str) -> list[Path]:
        return sorted((self.dir / PREVIEWS_DIR / str(trial_id) / "previews").glob("*.png"))


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read an experiment directory.

    Raises:
        ResultsError: naming the path, when it is not a directory or holds no readable result rows.
    """
    exp = Path(path).expanduser()
    if not exp.is_dir():
        raise ResultsError(f"{exp}: no such experiment directory")
    results = read_results(exp)
    if results.empty:
        raise ResultsError(f"{exp / 'results'}: the results table has no rows")
    notes: list[str] = []
    settings = _read_settings(exp, results, notes)
    space = _read_space(exp)
    try:
        trials = read_trials(exp)
    except ResultsError:
        trials = pd.DataFrame(columns=[TRIAL_ID, STATUS, STOP_REASON, ITERATIONS])
        notes.append(f"no {TRIALS_FILE}: the trials were rebuilt from the result rows (the driver died early)")
    trials = _complete_trials(trials, results, settings, notes)
    name = str(results[EXPERIMENT].iloc[0]) if EXPERIMENT in results else exp.name
    return Experiment(name=name, dir=exp.resolve(), results=results, trials=trials, settings=settings, space=space,
                      notes=notes)


def last_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Each trial's last result row (its highest training_iteration), indexed by trial_id."""
    df = results.sort_values([TRIAL_ID, ITERATION], kind="stable")
    return df.groupby(TRIAL_ID, sort=True).tail(1).set_index(TRIAL_ID)


def _read_settings(exp: Path, results: pd.DataFrame, notes: list[str]) -> Settings:
    path = exp / SETTINGS_FILE
    observed = int(results[ITERATION].max())
    if not path.is_file():
        notes.append(f"no {SETTINGS_FILE}: max_t taken as the most epochs any trial ran ({observed}), "
                     "scheduler unknown")
        return Settings(max_t=observed)
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return Settings(scheduler=str(data.get("scheduler", "unknown")),
                        algorithm=str(data.get("algorithm", "unknown")), max_t=int(data.get("max_t", observed)),
                        grace_period=int(data.get("grace_period", 1)),
                        reduction_factor=float(data.get("reduction_factor", 2.0)),
                        cpu=float(data.get("cpu", 1.0)), gpu=float(data.get("gpu", 0.0)),
                        num_samples=int(data.get("num_samples", 0)))
    except (yaml.YAMLError, AttributeError, TypeError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable search settings ({str(exc).splitlines()[0][:160]})") from None


def _read_space(exp: Path) -> dict:
    path = exp / SPACE_FILE
    if not path.is_file():
        return {}
    try:
        space = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(space, dict):
        raise ResultsError(f"{path}: expected a mapping of config keys to domains")
    return space


def _complete_trials(trials: pd.DataFrame, results: pd.DataFrame, settings: Settings,
                     notes: list[str]) -> pd.DataFrame:
    """The trials table with every trial that has result rows, its iteration count and best/last objective
    taken from the rows (the rows are the record; the trials table adds status, stop reason and error)."""
    last = last_rows(results)
    trials = trials.set_index(TRIAL_ID, drop=False).rename_axis(None)
    missing = [t for t in last.index if t not in trials.index]
    if missing:
        added = pd.DataFrame({TRIAL_ID: missing, STATUS: "UNKNOWN", STOP_REASON: STOP_UNFINISHED}, index=missing)
        trials = pd.concat([trials, added]) if len(trials) else added
        if len(trials) != len(added):
            notes.append(f"{len(missing)} trial(s) have result rows but no entry in {TRIALS_FILE} "
                         "(the driver died before writing it)")
    trials = trials.copy()
    ran = last[ITERATION].reindex(trials.index)
    trials[ITERATIONS] = ran.fillna(0).astype(int).to_numpy()
    # a rebuilt or stale entry that in fact reached max_t finished
    reached = (trials[STOP_REASON] == STOP_UNFINISHED) & (trials[ITERATIONS] >= settings.max_t)
    trials.loc[reached, STOP_REASON] = STOP_COMPLETED
    objective = results.groupby(TRIAL_ID)[OBJECTIVE] if OBJECTIVE in results else None
    if objective is not None:
        trials[f"best_{OBJECTIVE}"] = objective.min().reindex(trials.index).to_numpy()
        trials[f"last_{OBJECTIVE}"] = last[OBJECTIVE].reindex(trials.index).to_numpy()
    if BASELINE not in trials:
        trials[BASELINE] = last[BASELINE].reindex(trials.index).to_numpy() if BASELINE in last else None
    unfinished = int((trials[STOP_REASON] == STOP_UNFINISHED).sum())
    if unfinished:
        notes.append(f"{unfinished} trial(s) unfinished: the search did not end (resume it with "
                     "`p2m search resume`)")
    known = {STOP_COMPLETED, STOP_EARLY, STOP_ERRORED, STOP_UNFINISHED}
    odd = set(trials[STOP_REASON].dropna()) - known
    if odd:
        raise ResultsError(f"{TRIALS_FILE}: unknown stop reasons {sorted(odd)}")
    return trials.sort_values(TRIAL_ID, kind="stable").reset_index(drop=True)
