"""Which checkpoints an experiment keeps: those still needed, deleted by the driver as soon as they are not.

While a trial runs, Ray keeps its latest checkpoints (``CheckpointConfig(num_to_keep)``: what its resume needs,
and a population scheduler's donors; :mod:`search.run`). When a trial ends:

- an errored trial keeps them all: ``resume`` continues it from its latest;
- a baseline, and the ``keep_best`` best of the ended trials by the ranking rule
  (:func:`results.trials.rank_trials`, the leaderboard's and ``train-best``'s), keep their last one, for
  ``p2m predict`` and inspection (at ``max_t`` a final one: the evaluated weights, :func:`p2m.checkpoint.final_weights`);
- every other trial keeps none.

A trial that drops out of the best when a better one ends loses its checkpoint then. Under a population scheduler
(PBT, PB2) a trial may be handed another's checkpoint some time after it was chosen as the donor, so nothing is
deleted until every trial has ended. A retraining run (:mod:`search.runs`) keeps none: what it leaves is its ledger
entry and, for a tested run, its outputs with its weights (:func:`search.trainable.train_run`). The same rule holds on
a local disk and on object storage.
"""
from __future__ import annotations

import pandas as pd
from ray.tune import Callback

from p2m.names import OBJECTIVE
from results import storage
from results.schema import ITERATION, LAST_OBJECTIVE, STOP_COMPLETED, STOP_EARLY, STOP_REASON, TRIAL_ID
from results.trials import rank_trials
from search.ray_adapter import checkpoint_dirs, trial_dir_name
from search.space import baseline_name

ERROR = "ERROR"  # Ray's status of an errored trial


class Retention(Callback):
    """Deletes the checkpoints of ended trials that the rule (module docstring) does not keep.

    Args:
        experiment_dir: the Ray experiment (its trial directories hold the checkpoints).
        keep_best: how many of the best ended trials keep their last checkpoint (0: none but the baselines').
        max_t: the epochs of a trial that was not stopped early (the ranking rule ranks those first).
        baselines: baseline name -> its point (:func:`search.space.baseline_name`): their trials keep theirs.
        until_all_ended: delete nothing before every trial has ended (population schedulers).
    """

    def __init__(self, experiment_dir: str, keep_best: int, max_t: int, baselines: dict[str, dict] | None = None,
                 until_all_ended: bool = False):
        self.experiment_dir = storage.location(experiment_dir)
        self.keep_best = keep_best
        self.max_t = max_t
        self.baselines = dict(baselines or {})
        self.until_all_ended = until_all_ended
        self._ended: set[str] = set()  # trials that ended (not errored) in this driver's view
        self._done: set[str] = set()  # trials whose checkpoints are as the rule wants them (never revisited)
        self._trimmed: set[str] = set()  # kept trials already reduced to their last checkpoint
        self._started = False

    def on_step_begin(self, iteration, trials, **info):
        if not self._started:  # after a resume: the trials that had ended before the driver stopped
            self._started = True
            self._ended.update(t.trial_id for t in trials if str(t.status) == "TERMINATED")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended.add(trial.trial_id)
        self.apply(trials)

    def on_experiment_end(self, trials, **info):
        self.apply(trials)

    def apply(self, trials) -> list[str]:
        """Apply the rule to the ended trials of ``trials``; returns the checkpoint directories deleted."""
        if self.until_all_ended and any(t.trial_id not in self._ended and str(t.status) != ERROR for t in trials):
            return []
        ended = [t for t in self._ended_trials(trials) if t.trial_id not in self._done]
        if not ended:
            return []
        keep = self.kept(trials)
        deleted = []
        for trial in ended:
            if trial.trial_id in keep and trial.trial_id in self._trimmed:
                continue
            directory = storage.join(self.experiment_dir, trial_dir_name(trial))
            found = checkpoint_dirs(storage.subdirs(directory)) if storage.exists(directory) else []
            if trial.trial_id in keep:
                self._trimmed.add(trial.trial_id)
                found = found[:-1]  # all but the last (names sort by their index)
            else:
                self._done.add(trial.trial_id)  # out of the best for good: a trial ending later only adds a rival
            for name in found:
                storage.remove_tree(storage.join(directory, name))
                deleted.append(f"{trial.trial_id}/{name}")
        return deleted

    def _ended_trials(self, trials) -> list:
        """The trials of ``trials`` that ended in this driver's view, errored ones aside (they keep everything)."""
        return [t for t in trials if t.trial_id in self._ended and str(t.status) != ERROR]

    def kept(self, trials) -> set[str]:
        """The ended trials whose last checkpoint the rule keeps: the baselines and the ``keep_best`` best."""
        ended = self._ended_trials(trials)
        baselines = {t.trial_id for t in ended if baseline_name(t.config, self.baselines) is not None}
        if not ended or self.keep_best == 0:
            return baselines
        rows = []
        for t in ended:
            last = t.last_result or {}
            value = last.get(OBJECTIVE)
            rows.append({TRIAL_ID: t.trial_id, LAST_OBJECTIVE: float("nan") if value is None else value,
                         STOP_REASON: STOP_COMPLETED if last.get(ITERATION, 0) >= self.max_t else STOP_EARLY})
        best = rank_trials(pd.DataFrame(rows))[TRIAL_ID].head(self.keep_best)
        return baselines | set(best)
