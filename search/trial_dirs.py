"""Short trial directory names (Ray's ``TuneConfig.trial_dirname_creator``).

Ray's default name carries the trial's whole config (``train_trial_0a4ed_00005_5_data_gt_samples=1000,loss_...``):
unreadable in a listing, and near the path-length limits of some file systems. Here a trial's directory is
``<trainable>_<trial id>``, followed by a label where one says what the trial is: a baseline's name in a search,
a run's arm and seed in a retraining phase. A restored experiment keeps the names its trials were given.
"""
from __future__ import annotations

import re
from typing import Callable


class TrialDirName:
    """``trial -> "<trainable>_<trial id>[_<label>]"``, ``label(trial.config)`` giving the label or None.

    Picklable (the Tuner keeps it in the experiment's state) when ``label`` is: a module's function or a
    :func:`functools.partial` of one."""

    def __init__(self, label: Callable[[dict], str | None] | None = None):
        self.label = label

    def __call__(self, trial) -> str:
        label = self.label(trial.config) if self.label is not None else None
        parts = [trial.trainable_name, trial.trial_id] + ([re.sub(r"[^A-Za-z0-9._=-]+", "-", label)] if label else [])
        return "_".join(parts)
