"""Optuna behind one module: the study's storage and sampler, and the
queries the searcher makes of the study. (What a distribution contains is :mod:`results.space`'s, which
the analysis needs too.)

Only Optuna's public API is used here (no private attribute of Optuna's); tested with Optuna 5.0 (``setup.cfg``
pins it: Optuna 4.0 failed the tests, its PED-ANOVA evaluator takes ``baseline_quantile`` where 5.0 takes
``target_quantile``, in :mod:`results.importance`). What each function relies on:
- ``JournalStorage`` + ``JournalFileBackend`` (``optuna.storages.journal``, Optuna >= 4.0);
- ``Study.get_trials(deepcopy=False)``: the storage's view, trials in order of their ``number``;
- ``FloatDistribution``/``CategoricalDistribution`` attributes ``low``, ``high``, ``log``, ``choices``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from p2m.names import JOURNAL_FILE

STUDY_NAME = "p2m-search"


def quiet() -> None:
    """No info line per study or trial (e.g. "A new study created in Journal with name ...")."""
    optuna.logging.set_verbosity(logging.WARNING)


def optuna_storage(experiment_dir: str | Path, url: str = ""):
    """The study's storage: an RDB URL when given, else a journal file in the experiment directory."""
    if url:
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(experiment_dir) / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def build_sampler(algorithm: str, seed: int, n_startup_trials: int):
    """Multivariate TPE (seeded, random for its first ``n_startup_trials``) or random search."""
    if algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=n_startup_trials)
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"search.algorithm must be 'tpe' or 'random', got {algorithm!r}")


def stored_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` as the study's storage holds it now (a journal may be ahead of this process)."""
    return study.get_trials(deepcopy=False)[number]


def running_numbers(study: optuna.Study) -> set[int]:
    """The numbers of the trials the storage holds as running."""
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
