"""The driver-side Ray Tune callback that writes the Parquet tables (through ``results.parquet``)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
from ray.tune import Callback

from p2m.names import CONFIG_PREFIX, VIEWS_DIR
from results import storage
from results.schema import BASELINE, ERROR, EXPERIMENT, ITERATION, NUM_FAILURES, RAY_KEYS, STATUS, TRIAL_ID
from results.parquet import (FANOUT, VIEWS_KEY, ResultsError, ResultsWriter, compact, maintain, read_results,
                           write_trials)
from results.trials import summarise_trials
from search.population import trial_params
from search.space import baseline_name

DROPPED = {"config", "done", "should_checkpoint", "checkpoint_dir_name", "trial_log_path", "date", "iterations_since_restore",
           "time_since_restore", "experiment_tag"}


class ParquetResults(Callback):
    """One row per reported result into ``<experiment_dir>/RESULTS_DIR``; ``TRIALS_FILE`` rewritten when a
    trial ends (at most every ``trials_every_s`` seconds: it reads every row, and a search of a thousand trials
    would spend its driver on it) and when the experiment ends. Every ``FANOUT`` results the parts of
    ``RESULTS_DIR`` and of ``VIEWS_DIR`` (which the trials write themselves) are merged by level, so their file
    counts stay bounded (:func:`results.parquet.maintain`); when the experiment ends, each is compacted into one
    part.

    The trials table's figures come from the stored result rows, never from this object's memory: Ray
    restores the callback from a snapshot after a driver crash, and rows written after that snapshot are
    on disk only.
    """

    def __init__(self, experiment_dir: str | Path, experiment: str, max_t: int, base_flat: dict | None = None,
                 baselines: dict[str, dict] | None = None, trials_every_s: float = 30.0):
        self.experiment_dir = storage.location(experiment_dir)
        self.base_flat = dict(base_flat or {})  # the base config, "section.field" -> value
        self.baselines = dict(baselines or {})  # baseline name -> its point of the space
        self.experiment = experiment
        self.max_t = max_t
        self.writer = ResultsWriter(self.experiment_dir)
        self.trials_every_s = trials_every_s
        self._results_seen = 0
        self._trials_written_at = -math.inf

    def on_step_begin(self, iteration, trials, **info):
        self._trials = trials  # Ray's live list, read at its snapshots (get_state)

    def get_state(self):
        """Ray's snapshot of its state: remember each trial's status in it. The last snapshot, taken after an
        interrupted run ends and before Ray stops the running trials (and marks them TERMINATED), is what resume
        continues from: the trials table records those trials as it does (RUNNING: unfinished)."""
        self._snapshot_status = {t.trial_id: str(t.status) for t in getattr(self, "_trials", None) or ()}
        return None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = result_row(self.experiment, trial.trial_id, result)
        row[BASELINE] = baseline_name(trial.config, self.baselines)
        self.writer.append(row)
        self._results_seen += 1
        if self._results_seen % FANOUT == 0:
            self.writer.roll_up()  # this callback's own parts, from memory
            maintain(self.experiment_dir)
            maintain(self.experiment_dir, table=VIEWS_DIR, key=VIEWS_KEY)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write_trials(trials, throttled=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write_trials(trials, throttled=True)

    def on_experiment_end(self, trials, **info):
        self.writer.flush()
        compact(self.experiment_dir)
        compact(self.experiment_dir, table=VIEWS_DIR, key=VIEWS_KEY)
        self._write_trials(trials)

    def _write_trials(self, trials, throttled: bool = False) -> None:
        if not trials or throttled and time.monotonic() - self._trials_written_at < self.trials_every_s:
            return
        self._trials_written_at = time.monotonic()
        self.writer.flush()
        try:
            rows = read_results(self.experiment_dir)
        except ResultsError:  # no trial has reported yet
            rows = pd.DataFrame(columns=[TRIAL_ID, ITERATION])
        meta = pd.DataFrame([self._meta(t) for t in trials])
        write_trials(self.experiment_dir, summarise_trials(rows, meta, self.max_t))

    def _meta(self, trial) -> dict:
        """What the search knows of a trial beyond its rows: status, error, failures, baseline and config (the
        base config with the sampled point applied, so a trial that never reported has one too)."""
        status = str(trial.status)
        if status == "TERMINATED":  # stopped by Ray at the end of an interrupted run, not by the scheduler
            status = getattr(self, "_snapshot_status", {}).get(trial.trial_id, status)
        error = None
        if status == "ERROR":
            text = trial.get_error()
            error = _error_line(str(text)) if text else "error (no message recorded)"
        config = {**self.base_flat, **trial_params(trial.config or {})}  # (a PB2 trial's weights from their log10)
        return {TRIAL_ID: trial.trial_id, EXPERIMENT: self.experiment, STATUS: status, ERROR: error,
                NUM_FAILURES: int(getattr(trial, "num_failures", 0)),
                BASELINE: baseline_name(trial.config, self.baselines),
                **{f"{CONFIG_PREFIX}{k}": list(v) if isinstance(v, tuple) else v for k, v in config.items()
                   if not isinstance(v, dict)}}  # (a retraining run's params: which run, not its config)


def result_row(experiment: str, trial_id: str, result: dict) -> dict:
    row = {EXPERIMENT: experiment, TRIAL_ID: trial_id, ITERATION: int(result[ITERATION])}
    for key, value in result.items():
        if key in DROPPED or key in row or isinstance(value, dict):
            continue
        if key in RAY_KEYS or key.startswith(CONFIG_PREFIX) or isinstance(value, (int, float, str, bool, list)):
            row[key] = value
    return row


def _error_line(text: str) -> str:
    """The last line of a traceback that says what went wrong (e.g. 'NonFiniteLossError: loss became nan ...')."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[:500]
    return lines[-1][:500] if lines else "error"
