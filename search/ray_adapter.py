"""Ray behind one module: everything here relies on something of Ray's that is not its public API.

Tested with Ray 2.52 and 2.60 (``setup.cfg`` pins that range; token authentication, used by the cluster
templates, needs 2.52). What each piece relies on, to check when Ray moves:
- :class:`P2MOptunaSearch` subclasses ``ray.tune.search.optuna.OptunaSearch`` and reads its private
  ``_ot_trials`` (Ray trial id -> ``optuna.Trial``), ``_completed_trials`` (set of Ray trial ids) and
  ``_ot_study`` (the ``optuna.Study``).
- :func:`asha_milestones` reads ``AsyncHyperBandScheduler._brackets[0]._rungs`` ([(milestone, recorded)]).
- :func:`record_rungs` (read from Ray 2.60's ``ray/tune/schedulers/async_hyperband.py``) reads
  ``AsyncHyperBandScheduler._brackets`` and ``_metric_op`` (+1.0 for mode "max", -1.0 for "min": the rungs hold
  ``_metric_op * value``, higher is better) and calls ``_Bracket.on_result(trial, cur_iter, cur_rew)``, which records
  a trial's value at the highest milestone <= ``cur_iter`` it has no value at (only ``trial.trial_id`` is read).
- :func:`tuner_scheduler` reads ``Tuner._local_tuner._tune_config.scheduler``: the scheduler a restored Tuner runs
  with, unpickled from the state saved at launch (ray-project/ray#30838: its rungs are those of launch, empty).
- :func:`init_local_ray` sets ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``: Ray's single-machine mode,
  the only one in which every Ray server binds to 127.0.0.1.
- :func:`quiet_logs` names two of Ray's loggers and one environment variable whose warnings do not apply
  to a search, and rewrites one of Ray's tracebacks as the one line it means (listed there).
- :func:`trial_dir_name` reads ``Trial.storage.trial_dir_name`` (the trial's directory under the experiment), and
  :func:`checkpoint_dirs` knows Ray's names of a trial's checkpoints, ``checkpoint_<index, 6 digits>``.
- :class:`LostCheckpoints` reads and replaces ``Trial.run_metadata.checkpoint_manager`` (Ray's
  ``_CheckpointManager``) of a resumed trial whose latest checkpoint is gone.
Ray's public API is used elsewhere: the report/checkpoint calls only in :mod:`search.trainable`, the
Tuner in :mod:`search.run`, the callback in :mod:`search.callbacks`.
"""
from __future__ import annotations

import logging
import math
import os
import time
import warnings

import optuna
import pyarrow.fs
import ray
from ray import tune
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from results.schema import ITERATION
from search.optuna_adapter import running_numbers, stored_trial

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0  # how long per-epoch values wait before they are written to the study together


class P2MOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED for early-stopped trials and trusts the study's storage.

    1. Ray tells the searcher that a trial ASHA stopped has *completed*, with its early-rung score, so TPE
       would learn from partly trained losses as if they were final. Here a trial is told COMPLETE only
       when it reached ``max_t``; a trial stopped earlier is told PRUNED with its last value as its last
       intermediate value (at the epoch it reached: TPE ranks pruned trials by that epoch, then that value, and
       reads no other), an errored or non-finite one FAIL.
    2. With the study in a journal file (or a database), the study's storage can be ahead of the searcher
       Ray restores after a driver crash (Ray pickles the searcher periodically). Telling Optuna about a
       trial it already holds as finished raises ``UpdateFinishedTrialError`` and kills the search. Here
       every report and tell first asks the storage; trials the storage holds as finished are skipped,
       and trials the journal holds as running but the restored searcher never heard of (asked after its
       last snapshot) are closed as FAIL so the study does not keep ghosts.
    3. ``side_points`` (baselines outside the space, :func:`search.space.baseline_points`) are handed out first,
       as they are, and their trials are never told to Optuna: the study holds points of its space only.
       Which of them are still to run is part of this searcher's state, which Ray snapshots with its
       experiment state (a driver killed in between may hand one out again on ``resume``).
    4. With several objectives (``metric`` and ``mode`` lists: Optuna's multi-objective study), a trial that
       reached ``max_t`` is told its last value of each; Optuna keeps no intermediate values for such a study,
       so none are reported, and an early-stopped trial is told PRUNED as above.
    5. Every epoch's value is an intermediate value of its Optuna trial (``optuna-dashboard`` draws the curves
       from them), told in batches: the values are kept as they arrive and written together every
       :data:`FLUSH_SECONDS`, and a trial's remaining ones before it is told its end. The journal write (a
       locked append) is then off the per-result path; a driver killed between two batches loses the values
       of those seconds from the study (never from the Parquet tables), and an epoch already told is not told
       again. The last value before the end is the one TPE reads of a pruned trial, as in 1.
    """

    def __init__(self, *args, max_t: int, side_points: list[dict] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if max_t < 1:
            raise ValueError(f"max_t must be >= 1, got {max_t}")
        self._max_t = max_t
        self._side_pending = [dict(p) for p in side_points or ()]
        self._side_trials: set[str] = set()
        self._unsent: dict[str, dict[int, float]] = {}  # Ray trial id -> {epoch: value} not yet in the study
        self._sent_at = time.monotonic()

    def suggest(self, trial_id: str) -> dict | None:
        if self._side_pending:
            self._side_trials.add(trial_id)
            return self._side_pending.pop(0)
        return super().suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Keeps the epoch's value for the next batch (5. above); writes the batch when it is due."""
        if self._multi or trial_id in self._side_trials or trial_id not in self._ot_trials:
            return
        value, epoch = result.get(self.metric), result.get(ITERATION)
        if value is not None and epoch and math.isfinite(value):
            self._unsent.setdefault(trial_id, {})[int(epoch)] = float(value)
        if time.monotonic() - self._sent_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self, trial_ids=None) -> int:
        """Writes the kept per-epoch values (of ``trial_ids``, else of every trial) to the study; returns how many.
        Values of a trial the study holds as finished, or of an epoch it already has, are dropped."""
        told = 0
        for trial_id in list(self._unsent) if trial_ids is None else trial_ids:
            values, ot_trial = self._unsent.pop(trial_id, None), self._ot_trials.get(trial_id)
            if not values or ot_trial is None:
                continue
            stored = stored_trial(self._ot_study, ot_trial.number)
            if stored.state.is_finished():
                continue
            for epoch, value in sorted(values.items()):
                if epoch not in stored.intermediate_values:
                    ot_trial.report(value, epoch)
                    told += 1
        if trial_ids is None:
            self._sent_at = time.monotonic()
        return told

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._side_trials:
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        if not self._multi:
            self.flush([trial_id])
        if self._finished_in_storage(ot_trial):
            logger.info("trial %s is already finished in the Optuna study; not telling it again", trial_id)
            return
        metrics = self.metric if self._multi else [self.metric]
        values = [(result or {}).get(m) for m in metrics]
        finite = all(v is not None and math.isfinite(v) for v in values)
        value = values if self._multi else values[0]
        iterations = (result or {}).get(ITERATION, 0)
        # an early-stopped trial's last value and epoch, the only intermediate value TPE reads of a PRUNED trial
        if not self._multi and finite and iterations and \
                iterations not in stored_trial(self._ot_study, ot_trial.number).intermediate_values:
            ot_trial.report(value, iterations)
        if error or not finite:
            state, value = optuna.trial.TrialState.FAIL, None
        elif iterations >= self._max_t:
            state = optuna.trial.TrialState.COMPLETE
        else:
            state, value = optuna.trial.TrialState.PRUNED, None
        self._ot_study.tell(ot_trial, value, state=state)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._unsent = getattr(self, "_unsent", {})  # a snapshot of a searcher from before per-epoch values
        self._sent_at = time.monotonic()  # another process's clock
        self.reconcile()

    def reconcile(self) -> int:
        """Close as FAIL the study's running trials this searcher does not know; returns how many."""
        known = {t.number for t in self._ot_trials.values()}
        ghosts = sorted(running_numbers(self._ot_study) - known)
        for number in ghosts:
            self._ot_study.tell(number, state=optuna.trial.TrialState.FAIL)
        if ghosts:
            logger.warning("closed %d Optuna trial(s) left running by a driver that died", len(ghosts))
        return len(ghosts)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    @property
    def _multi(self) -> bool:
        return isinstance(self.metric, (list, tuple))

    def _finished_in_storage(self, ot_trial) -> bool:
        return stored_trial(self._ot_study, ot_trial.number).state.is_finished()


def asha_milestones(scheduler: AsyncHyperBandScheduler) -> tuple[float, ...]:
    """The epochs (training iterations) at which ASHA compares trials, ascending, as Ray computed them."""
    return tuple(sorted(float(milestone) for milestone, _ in scheduler._brackets[0]._rungs))


def record_rungs(scheduler: AsyncHyperBandScheduler, curves: dict[str, list[tuple[int, float]]]) -> int:
    """Record in ASHA's rungs what it records when each trial reports its curve, in iteration order.

    Ray's own bookkeeping does it (``_Bracket.on_result``): a value goes to the highest milestone at or below its
    iteration that the trial has no value at yet, signed by the scheduler's mode; values already there stay. The
    decisions that bookkeeping returns are ignored: those trials were decided when they reported.

    Args:
        scheduler: ASHA with one bracket (with several, which bracket a trial was in is not recorded).
        curves: trial id -> [(training_iteration, objective value)], each trial's reports.

    Returns:
        How many values were recorded.

    Raises:
        ValueError: for ASHA with more than one bracket, or without a mode.
    """
    if len(scheduler._brackets) != 1:
        raise ValueError(f"scheduler must be ASHA with one bracket, got {len(scheduler._brackets)} brackets")
    if scheduler._metric_op is None:
        raise ValueError("scheduler must have its mode set ('min' or 'max'), got none")
    bracket = scheduler._brackets[0]
    before = sum(len(recorded) for _, recorded in bracket._rungs)
    for trial_id, curve in curves.items():
        trial = _TrialId(trial_id)
        for iteration, value in sorted(curve, key=lambda point: point[0]):
            bracket.on_result(trial, iteration, scheduler._metric_op * value)
    return sum(len(recorded) for _, recorded in bracket._rungs) - before


def tuner_scheduler(tuner: tune.Tuner) -> TrialScheduler:
    """The scheduler ``tuner`` will run with (for a restored Tuner, the one pickled at launch).

    Raises:
        ValueError: for a Tuner in Ray Client mode (its scheduler lives in a remote actor).
    """
    local = getattr(tuner, "_local_tuner", None)
    if local is None:
        raise ValueError("tuner must run in this process (not through Ray Client), got a remote Tuner")
    return local._tune_config.scheduler


class _TrialId:
    """What ``_Bracket.on_result`` reads of a trial: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def init_local_ray() -> None:
    """Start a private local Ray whose every server binds to 127.0.0.1 (never a stale cluster found by accident).

    Ray's single-machine mode: without it Ray 2.60 turns "127.0.0.1" into the machine's outward IP and its
    gRPC servers listen on every interface. The environment variable reaches the Ray processes started
    here; the driver read the constant when it imported ray, so it is set too.
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=True,
             configure_logging=True, logging_level="WARNING")


def quiet_logs(local: bool) -> None:
    """Silence what does not apply to a search, before ``ray.init``:
    - Tune's "Experiment state snapshotting has been triggered multiple times" hint, which short epochs
      with ``CheckpointConfig(num_to_keep)`` trigger and which has no remedy here
      (``TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0``, Ray's documented switch);
    - in the embedded local mode, "Token authentication is enabled for this Ray cluster" (logger
      ``ray._private.authentication.authentication_token_setup``): the local instance is private to this
      process tree on loopback, and token authentication stays on;
    - after a resume, "Trial ...: Error handling checkpoint ..." with a ``FileNotFoundError`` traceback
      (logger ``ray.tune.execution.tune_controller``) becomes one line: see :class:`GoneCheckpointFilter`;
    - scikit-learn's convergence warnings from PB2's Gaussian process, and PBT's advice to reuse actors.
    """
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # PB2's Gaussian process fits its kernel at every exploit; scikit-learn warns when a length scale ends at its
    # bound, which on a population of a few trials is the rule and asks nothing of the user
    warnings.filterwarnings("ignore", module=r"sklearn\.gaussian_process")
    # PBT's advice to reuse actors: this project must not (a stopped trial's thread stays parked, search.trainable)
    warnings.filterwarnings("ignore", message="Consider boosting PBT performance by enabling `reuse_actors`")
    if local:
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    controller = logging.getLogger(CONTROLLER_LOGGER)
    if not any(isinstance(f, GoneCheckpointFilter) for f in controller.filters):
        controller.addFilter(GoneCheckpointFilter())


CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"


class GoneCheckpointFilter(logging.Filter):
    """One line instead of a traceback for a checkpoint that a killed driver had already deleted.

    With ``CheckpointConfig(num_to_keep)`` the driver deletes a trial's older checkpoints. A driver killed after
    deleting one but before its next experiment snapshot leaves a snapshot that still lists it; after
    ``resume``, Ray deletes it again, finds no path (``FileNotFoundError``), and logs "Error handling
    checkpoint" with the traceback. The trial's new checkpoint is registered before that deletion, so
    nothing is lost; any other error in the same place keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, FileNotFoundError) and str(record.msg).startswith("Trial %s: Error handling checkpoint"):
            record.msg = "Trial %s: an old checkpoint was already deleted (before the driver was restarted): %s"
            record.args = (record.args[0] if record.args else "?", error)
            record.exc_info, record.exc_text = None, None
        return True


class LostCheckpoints(Callback):
    """After a resume, a trial whose latest checkpoint is gone from storage restarts from its first epoch.

    With ``CheckpointConfig(num_to_keep)`` Ray deletes a trial's oldest checkpoint as soon as it registers a
    new one, and uploads the experiment snapshot that lists the new one afterwards, in the background. A
    driver killed between the two leaves a snapshot whose latest checkpoint for that trial no longer exists:
    Ray would ask the trial to restore it, fail, count a failure, and try again until the trial errors. The
    trial's newer checkpoints exist, but the driver's view of it (its last result, the scheduler's rungs, the
    searcher's intermediate values) ends at the snapshot, so restarting it is the consistent choice; its rows
    are written again, and the tables keep one per epoch. Checked once, before the first trial starts.
    """

    def __init__(self):
        self._checked = False

    def on_step_begin(self, iteration, trials, **info):
        if self._checked:
            return
        self._checked = True
        for trial in trials:
            result = None if trial.is_finished() else trial.latest_checkpoint_result
            if result is None or _exists(result.checkpoint):
                continue
            logger.warning("Trial %s: its latest checkpoint %s is gone from storage (a driver killed before it saved "
                           "the experiment state had deleted it); the trial restarts from its first epoch",
                           trial, result.checkpoint.path)
            manager = trial.run_metadata.checkpoint_manager
            trial.run_metadata.checkpoint_manager = _CheckpointManager(checkpoint_config=manager.checkpoint_config)
            trial.run_metadata.invalidate_cache()


def _exists(checkpoint) -> bool:
    return checkpoint.filesystem.get_file_info(checkpoint.path).type != pyarrow.fs.FileType.NotFound


CHECKPOINT_PREFIX = "checkpoint_"  # Ray's checkpoint directories in a trial's: checkpoint_000000, checkpoint_000001, ...


def trial_dir_name(trial) -> str:
    """The name of ``trial``'s directory in its experiment's."""
    return trial.storage.trial_dir_name


def checkpoint_dirs(names) -> list[str]:
    """The names among ``names`` (a trial directory's entries) that are Ray's checkpoints, oldest first."""
    return sorted(n for n in names if n.startswith(CHECKPOINT_PREFIX) and n[len(CHECKPOINT_PREFIX):].isdigit())
