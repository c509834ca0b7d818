"""ASHA and the Optuna searcher, set up from a :class:`search.config.SearchConfig`.

:class:`P2MOptunaSearch` fixes two things Ray Tune's ``OptunaSearch`` gets wrong for this project:

1. Ray tells the searcher that a trial ASHA stopped has *completed*, with its early-rung score, so TPE
   would learn from partly trained losses as if they were final. Here a trial is told COMPLETE only
   when it reached ``max_t``; a trial stopped earlier is told PRUNED (its per-epoch values are already
   in the study as intermediate values), an errored or non-finite one FAIL.
2. With the study in a journal file (or a database), the study's storage can be ahead of the searcher
   Ray restores after a driver crash (Ray pickles the searcher periodically). Telling Optuna about a
   trial it already holds as finished raises ``UpdateFinishedTrialError`` and kills the search. Here
   every report and tell first asks the storage; trials the storage holds as finished are skipped,
   and trials the journal holds as running but the restored searcher never heard of (asked after its
   last snapshot) are closed as FAIL so the study does not keep ghosts.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from results.schema import ITERATION, MODE, OBJECTIVE

logger = logging.getLogger(__name__)
JOURNAL_FILE = "optuna_journal.log"
STUDY_NAME = "p2m-search"


class P2MOptunaSearch(OptunaSearch):
    """OptunaSearch with PRUNED for early-stopped trials and a storage-first view of finished trials."""

    def __init__(self, *args, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        if max_t < 1:
            raise ValueError(f"max_t must be >= 1, got {max_t}")
        self._max_t = max_t

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials or self._finished_in_storage(ot_trial):
            return
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return  # Optuna refuses NaN intermediate values; the trial will end FAIL
        ot_trial.report(value, result[ITERATION])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        if self._finished_in_storage(ot_trial):
            logger.info("trial %s is already finished in the Optuna study; not telling it again", trial_id)
            return
        value = (result or {}).get(self.metric)
        iterations = (result or {}).get(ITERATION, 0)
        # the result that ends a trial reaches the searcher here, not through on_trial_result
        if value is not None and math.isfinite(value) and iterations and \
                iterations not in self._ot_study._storage.get_trial(ot_trial._trial_id).intermediate_values:
            ot_trial.report(value, iterations)
        if error or value is None or not math.isfinite(value):
            state, value = optuna.trial.TrialState.FAIL, None
        elif iterations >= self._max_t:
            state = optuna.trial.TrialState.COMPLETE
        else:
            state, value = optuna.trial.TrialState.PRUNED, None
        self._ot_study.tell(ot_trial, value, state=state)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.reconcile()

    def reconcile(self) -> int:
        """Close as FAIL the study's running trials this searcher does not know; returns how many."""
        known = {t._trial_id for t in self._ot_trials.values()}
        closed = 0
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen._trial_id not in known:
                self._ot_study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
                closed += 1
        if closed:
            logger.warning("closed %d Optuna trial(s) left running by a driver that died", closed)
        return closed

    def _finished_in_storage(self, ot_trial) -> bool:
        storage = self._ot_study._storage
        return storage.get_trial(ot_trial._trial_id).state.is_finished()


def optuna_storage(experiment_dir: str | Path, url: str = ""):
    """The study's storage: an RDB URL when given, else a journal file in the experiment directory."""
    if url:
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(experiment_dir) / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def build_searcher(space: dict, points: list[dict], storage, seed: int, max_t: int, max_concurrent: int,
                   algorithm: str = "tpe"):
    """``P2MOptunaSearch`` (multivariate TPE, seeded, or random search) behind a ConcurrencyLimiter."""
    if algorithm == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=max(len(points) + 2, 5))
    elif algorithm == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        raise ValueError(f"search.algorithm must be 'tpe' or 'random', got {algorithm!r}")
    searcher = P2MOptunaSearch(space=space, metric=OBJECTIVE, mode=MODE, points_to_evaluate=points or None,
                               sampler=sampler, seed=seed, storage=storage, study_name=STUDY_NAME, max_t=max_t)
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)


def build_scheduler(kind: str, max_t: int, grace_period: int, reduction_factor: float):
    """ASHA over ``training_iteration`` (epochs), or FIFO (no early stopping)."""
    if kind == "asha":
        return ASHAScheduler(time_attr=ITERATION, metric=OBJECTIVE, mode=MODE, max_t=max_t,
                             grace_period=grace_period, reduction_factor=reduction_factor)
    if kind == "fifo":
        return FIFOScheduler()
    raise ValueError(f"scheduler.type must be 'asha' or 'fifo', got {kind!r}")
