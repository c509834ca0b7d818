"""The driver-side Ray Tune callback that writes the Parquet tables (through ``results.store``)."""
from __future__ import annotations

import math
from pathlib import Path

from ray.tune import Callback

from results.schema import (BASELINE, CONFIG_PREFIX, ERROR, EXPERIMENT, ITERATION, ITERATIONS, OBJECTIVE, STATUS,
                            STOP_COMPLETED, STOP_EARLY, STOP_ERRORED, STOP_REASON, STOP_UNFINISHED, TRIAL_ID)
from results.store import ResultsError, ResultsWriter, compact, read_results, write_trials

# Ray's own keys kept in a row (the rest of Ray's bookkeeping is dropped)
RAY_KEYS = ("time_total_s", "time_this_iter_s", "timestamp", "node_ip", "node_id", "hostname", "pid")
DROPPED = {"config", "done", "should_checkpoint", "checkpoint_dir_name", "trial_log_path", "date", "iterations_since_restore",
           "time_since_restore", "experiment_tag"}


class ParquetResults(Callback):
    """One row per reported result into ``<experiment_dir>/results/``; ``trials.parquet`` rewritten when a
    trial ends and when the experiment ends (then the parts are compacted)."""

    def __init__(self, experiment_dir: str | Path, experiment: str, max_t: int, base_flat: dict | None = None,
                 baselines: dict[str, dict] | None = None):
        self.experiment_dir = Path(experiment_dir)
        self.base_flat = dict(base_flat or {})  # the base config, "section.field" -> value
        self.baselines = dict(baselines or {})  # baseline name -> its point of the space
        self.experiment = experiment
        self.max_t = max_t
        self.writer = ResultsWriter(self.experiment_dir)
        self.best: dict[str, tuple[float, int]] = {}  # trial_id -> (lowest objective, its iteration)
        try:  # a resumed experiment: start from the rows already stored
            df = read_results(self.experiment_dir)
            for trial_id, value, it in zip(df[TRIAL_ID], df.get(OBJECTIVE, []), df[ITERATION]):
                self._track(trial_id, value, it)
        except ResultsError:
            pass

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = result_row(self.experiment, trial.trial_id, result)
        row[BASELINE] = baseline_name(trial.config, self.baselines)
        self.writer.append(row)
        self._track(trial.trial_id, row.get(OBJECTIVE), row[ITERATION])

    def _track(self, trial_id: str, value, it) -> None:
        if finite(value) and (trial_id not in self.best or value < self.best[trial_id][0]):
            self.best[trial_id] = (float(value), int(it))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write_trials(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write_trials(trials)

    def on_experiment_end(self, trials, **info):
        self.writer.flush()
        if any((self.experiment_dir / "results").glob("part-*.parquet")):
            compact(self.experiment_dir)
        self._write_trials(trials)

    def _write_trials(self, trials) -> None:
        if trials:
            rows = [trial_row(self.experiment, t, self.max_t, self.base_flat) for t in trials]
            for trial, row in zip(trials, rows):
                row[BASELINE] = baseline_name(trial.config, self.baselines)
                value, it = self.best.get(row[TRIAL_ID], (None, None))
                row[f"best_{OBJECTIVE}"], row["best_iteration"] = value, it
            write_trials(self.experiment_dir, rows)


def result_row(experiment: str, trial_id: str, result: dict) -> dict:
    row = {EXPERIMENT: experiment, TRIAL_ID: trial_id, ITERATION: int(result[ITERATION])}
    for key, value in result.items():
        if key in DROPPED or key in row or isinstance(value, dict):
            continue
        if key in RAY_KEYS or key.startswith(CONFIG_PREFIX) or isinstance(value, (int, float, str, bool, list)):
            row[key] = value
    return row


def trial_row(experiment: str, trial, max_t: int, base_flat: dict | None = None) -> dict:
    last = trial.last_result or {}
    iterations = int(last.get(ITERATION, 0) or 0)
    status = str(trial.status)
    error = None
    if status == "ERROR":
        reason = STOP_ERRORED
        text = trial.get_error()
        error = _error_line(str(text)) if text else "error (no message recorded)"
    elif status == "TERMINATED":
        reason = STOP_COMPLETED if iterations >= max_t else STOP_EARLY
    else:
        reason = STOP_UNFINISHED
    row = {EXPERIMENT: experiment, TRIAL_ID: trial.trial_id, STATUS: status, STOP_REASON: reason, ERROR: error,
           ITERATIONS: iterations, "num_failures": int(getattr(trial, "num_failures", 0))}
    # the trial's config even when it never reported: the base config with the sampled point applied
    config = {**(base_flat or {}), **(trial.config or {})}
    row.update({f"{CONFIG_PREFIX}{k}": list(v) if isinstance(v, tuple) else v for k, v in config.items()})
    for key, value in last.items():
        if key.startswith(CONFIG_PREFIX):
            row[key] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key not in DROPPED:
            row[f"last.{key}"] = value
    row[f"last_{OBJECTIVE}"] = last.get(OBJECTIVE)
    return row


def baseline_name(config: dict | None, baselines: dict[str, dict]) -> str | None:
    """The baseline whose point ``config`` is (the searcher enqueues them verbatim), else None."""
    for name, point in baselines.items():
        if config and all(key in config and _same(config[key], value) for key, value in point.items()):
            return name
    return None


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _error_line(text: str) -> str:
    """The last line of a traceback that says what went wrong (e.g. 'NonFiniteLossError: loss became nan ...')."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[:500]
    return lines[-1][:500] if lines else "error"


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
