"""Optuna behind one module: the study's storage and sampler, and the
queries the searcher makes of the study. (What a distribution contains is :mod:`results.space`'s, which
the analysis needs too.)

Only Optuna's public API is used here (no private attribute of Optuna's); tested with Optuna 5.0 (``setup.cfg``
pins it: Optuna 4.0 failed the tests, its PED-ANOVA evaluator takes ``baseline_quantile`` where 5.0 takes
``target_quantile``, in :mod:`results.analysis.importance`). What each function relies on:
- ``JournalStorage`` + ``JournalFileBackend`` (``optuna.storages.journal``, Optuna >= 4.0), and that the
  backend's constructor takes the file's path and sets all of its state (:class:`SnapshotJournalBackend`
  pickles the journal's bytes and calls it again when unpickled);
- ``Study.get_trials(deepcopy=False)``: the storage's view, trials in order of their ``number``;
- ``FloatDistribution``/``CategoricalDistribution`` attributes ``low``, ``high``, ``log``, ``choices``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from p2m.atomic import atomic_write_bytes
from p2m.names import JOURNAL_FILE, RANDOM, TPE
from results import storage

STUDY_NAME = "p2m-search"


def quiet() -> None:
    """No info line per study or trial (e.g. "A new study created in Journal with name ...")."""
    optuna.logging.set_verbosity(logging.WARNING)


def optuna_storage(experiment_dir: str | Path, url: str = "", new: bool = False):
    """The study's storage: an RDB URL when given; else a journal file in a local experiment directory; else, for
    an experiment on object storage, a journal on the driver's disk that travels in the searcher's snapshot
    (:class:`SnapshotJournalBackend`). ``new``: a new search (a stale local copy of the journal is removed)."""
    if url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # SQLAlchemy's many errors: a bad URL, a missing driver, no server
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(url, "<url>")[:200]
            raise ValueError(f"storage.optuna_url: cannot open the study's database ({type(exc).__name__}: "
                             f"{reason})") from None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if storage.is_remote(experiment_dir):
        return JournalStorage(SnapshotJournalBackend(str(experiment_dir), new=new))
    path = Path(experiment_dir) / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


class SnapshotJournalBackend(JournalFileBackend):
    """The Optuna journal of an experiment on object storage: a file on the driver's disk
    (:func:`results.storage.cache_dir`) whose contents are pickled with it.

    Object stores have no appends and no locks, so the journal cannot live there. Ray snapshots the searcher,
    study and storage included, into its experiment state, which it uploads to the experiment's storage; this
    backend adds the journal's bytes to that pickle. Unpickled on any machine (``p2m search resume`` after the
    driver died, perhaps on a new head node), it writes them back to its local file, unless that file already
    extends them (the same machine, whose journal ran ahead of the snapshot: :class:`P2MOptunaSearch` reconciles
    that case as it does for a local journal).
    """

    def __init__(self, experiment_uri: str, new: bool = False):
        self._experiment_uri = experiment_uri
        path = self.local_path(experiment_uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        if new:
            path.unlink(missing_ok=True)
        super().__init__(str(path))

    @staticmethod
    def local_path(experiment_uri: str) -> Path:
        return storage.cache_dir(experiment_uri, "optuna") / JOURNAL_FILE

    def __getstate__(self) -> dict:
        return {"experiment_uri": self._experiment_uri, "journal": self.local_path(self._experiment_uri).read_bytes()}

    def __setstate__(self, state: dict) -> None:
        path = self.local_path(state["experiment_uri"])
        snapshot = state["journal"]
        here = path.read_bytes() if path.is_file() else b""
        if not (len(here) >= len(snapshot) and here.startswith(snapshot)):
            atomic_write_bytes(path, snapshot)
        self.__init__(state["experiment_uri"])


def build_sampler(algorithm: str, seed: int, n_startup_trials: int):
    """Multivariate TPE (seeded, random for its first ``n_startup_trials``) or random search."""
    if algorithm == TPE:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=n_startup_trials)
    if algorithm == RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"search.algorithm must be {TPE!r} or {RANDOM!r}, got {algorithm!r}")


def stored_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` as the study's storage holds it now (a journal may be ahead of this process)."""
    return study.get_trials(deepcopy=False)[number]


def running_numbers(study: optuna.Study) -> set[int]:
    """The numbers of the trials the storage holds as running."""
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
