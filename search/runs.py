"""Retraining runs as Ray Tune trials: a race's rounds and ``train-best``'s verdict runs.

A run is one configuration of the search (its source trial) trained with one seed to its last epoch and tested
(:func:`search.trainable.train_run`). A batch of runs is a *phase*: one Ray Tune experiment of its own under
``RUNS_DIR/<phase>-<digest>/`` of the search's experiment, with the search's resources, ``max_concurrent`` and
``max_failures``, its per-epoch Parquet rows (``results/``, with the run's arm, seed and round) and its checkpoints,
on the cluster the driver is connected to. The digest names the phase's runs and configurations, so the same
command run again after a killed driver finds the same phase and restores it (unfinished runs continue from their
checkpoints), and runs the ledger records as finished (:mod:`results.runs`) are never trained again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from ray import tune
from ray.tune.logger import CSVLoggerCallback

from p2m.names import OBJECTIVE, RUNS_DIR
from results import storage
from results.runs import is_finished
from results.schema import ARM, ITERATION, PHASE, ROUND, SEED, TRIAL_ID
from search.callbacks import ParquetResults
from search.config import SearchConfig
from search.ray_adapter import LostCheckpoints
from search.outcome import Interrupted, fit
from search.preflight import preflight_config
from search.retention import Retention
from search.trainable import RUN_PARAM, train_run, trial_resources
from search.trial_dirs import TrialDirName
from search.trust import SignState, restore_key, verify


@dataclasses.dataclass(frozen=True)
class Run:
    """One run: the search's trial ``trial_id`` (its configuration) trained with ``seed``."""

    trial_id: str
    seed: int
    arm: str  # what it stands for (BEST_ARM, a baseline's name, a race candidate's label)
    phase: str  # PHASE_RACE or PHASE_VERDICT
    round: int = 0  # a race's round, 1-based

    def params(self) -> dict:
        return {TRIAL_ID: self.trial_id, SEED: self.seed, ARM: self.arm, PHASE: self.phase, ROUND: self.round}


def run_label(config: dict) -> str:
    """A run's trial directory label: its arm and seed (:class:`search.trial_dirs.TrialDirName`)."""
    params = config[RUN_PARAM]
    return f"{params[ARM]}_seed{params[SEED]}"


class RunsError(ValueError):
    """Runs of a phase ended without being recorded as finished (each errored more than ``max_failures`` times)."""


def run_phase(cfg: SearchConfig, experiment_dir: storage.Location, name: str, runs: list[Run], arms: dict,
              epochs: int, split: str = "", previews: int = 0, changing: tuple[str, ...] = (),
              verbose: int = 1) -> int:
    """Train every run of ``runs`` that the ledger does not hold yet, as trials of the phase ``name``; returns how
    many were trained. Ray must be initialised (the cluster, or the embedded local instance).

    Args:
        arms: source trial id -> ``{"config": ..., "segments": ...}`` (:func:`search.trainable.train_run`).

    Raises:
        RunsError: naming the runs that ended unrecorded, with their errors.
    """
    pending = [r for r in runs if not is_finished(experiment_dir, r.trial_id, r.seed)]
    if not pending:
        return 0
    preflight_config(cfg.base.data, experiment_dir, split)  # each node: the data readable, storage writable
    digest = hashlib.sha1(json.dumps([[r.params() for r in runs], {t: arms[t] for t in sorted({r.trial_id for r in runs})},
                                      split], sort_keys=True, default=str).encode()).hexdigest()[:8]
    phase = storage.join(experiment_dir, RUNS_DIR, f"{name}-{digest}")
    used = {r.trial_id: arms[r.trial_id] for r in runs}
    trainable = tune.with_resources(
        tune.with_parameters(train_run, arms=used, experiment_dir=str(experiment_dir), split=split, previews=previews,
                             changing=changing),
        trial_resources(cfg.cpu, cfg.gpu))
    print(f"{name}: {len(pending)} of {len(runs)} runs to train, {cfg.max_concurrent} at a time ({phase})", flush=True)
    if tune.Tuner.can_restore(str(phase)):
        verify(phase, restore_key())
        tuner = tune.Tuner.restore(str(phase), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space={RUN_PARAM: tune.grid_search([r.params() for r in pending])},
                           tune_config=tune.TuneConfig(max_concurrent_trials=cfg.max_concurrent, reuse_actors=False,
                                                       trial_dirname_creator=TrialDirName(run_label)),
                           run_config=_run_config(cfg, phase, epochs, verbose))
    outcome = fit(tuner, phase, len(pending))
    if outcome.interrupted:
        raise Interrupted(outcome.summary(cfg.max_failures, "the same command"), 128 + outcome.signal_number)
    failed = [r for r in pending if not is_finished(experiment_dir, r.trial_id, r.seed)]
    if failed:
        raise RunsError(f"{name}: {len(failed)} of {len(pending)} runs did not finish ("
                        + ", ".join(f"{r.arm} seed {r.seed}" for r in failed[:5])
                        + f"{', ...' if len(failed) > 5 else ''}); their errors are in {phase}/*/error.txt; "
                        "run the same command again to retry them")
    return len(pending)


def _run_config(cfg: SearchConfig, phase: storage.Location, epochs: int, verbose: int) -> tune.RunConfig:
    reporter = tune.CLIReporter(metric_columns={ITERATION: "epochs", OBJECTIVE: "val CD s3"},
                                parameter_columns={f"{RUN_PARAM}/{ARM}": "arm", f"{RUN_PARAM}/{SEED}": "seed"},
                                max_report_frequency=30, metric=OBJECTIVE, mode="min")
    return tune.RunConfig(
        name=storage.name_of(phase), storage_path=str(storage.parent_of(phase)), verbose=verbose,
        progress_reporter=reporter, failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=[ParquetResults(phase, storage.name_of(phase), epochs), CSVLoggerCallback(),
                   LostCheckpoints(), Retention(phase, keep_best=0, max_t=epochs), SignState()])


__all__ = ["Run", "RunsError", "run_phase"]
