"""What a scheduler of a search is: a small strategy (:class:`Strategy`) registered under its
``scheduler.type`` name (:func:`register`), and the one way every scheduler keeps the baselines out of its
decisions (:class:`KeepBaselines`).

A new scheduler is one module of this package, listed in the package's import line: it subclasses
:class:`Strategy`, sets ``name``, builds its Ray scheduler (whose class puts :class:`KeepBaselines` first) and
overrides what differs from the defaults. ``tests/search/test_scheduler_contract.py`` runs every registered one
through the same checks.
"""
from __future__ import annotations

import math
from typing import ClassVar

from ray.tune.schedulers import TrialScheduler

from results import storage
from results.schema import ITERATION
from search.optuna_adapter import optuna_storage
from search.population import changing_keys
from search.searcher import build_searcher
from search.space import baseline_name

REGISTRY: dict[str, Strategy] = {}  # scheduler.type -> its strategy, filled by @register


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: the strategy becomes ``scheduler.type: <cls.name>``."""
    if cls.name in REGISTRY:
        raise ValueError(f"scheduler {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls()
    return cls


def strategy(name: str) -> Strategy:
    """The registered strategy called ``name``.

    Raises:
        ValueError: naming ``scheduler.type`` and the registered names.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"scheduler.type must be one of {tuple(REGISTRY)}, got {name!r}") from None


class Strategy:
    """One scheduler of a search: how ``launch`` builds it and what the rest of a search asks of it.

    ``cfg`` below is the search's settings (:class:`results.settings.SearchSettings`, or the ``SearchConfig``
    that extends it), ``space`` its Optuna distributions, ``baselines`` name -> the baseline's point.
    """

    name: ClassVar[str]
    # Optuna proposes every trial (search.searcher); False: Ray's own generator draws the trials (a population)
    uses_searcher: ClassVar[bool] = True
    # a trial may go on from another trial's checkpoint under weights changed mid-run: the continuous keys of the
    # space change during a trial, and no checkpoint is deleted before every trial has ended (search.retention)
    shares_checkpoints: ClassVar[bool] = False

    def build(self, cfg, space: dict, baselines: dict[str, dict]) -> TrialScheduler:
        """Ray's scheduler for a new search."""
        raise NotImplementedError

    def checkpoints_to_keep(self, cfg) -> int:
        """Checkpoints Ray keeps per running trial: the latest, and the one before it, which the last uploaded
        snapshot may still call the latest (with 1, a driver killed before the next snapshot leaves a trial whose
        checkpoint is gone: ``search.ray_adapter.LostCheckpoints``). Ended trials: ``search.retention``."""
        return 2

    def rungs(self, scheduler: TrialScheduler) -> tuple[float, ...]:
        """The epochs at which ``scheduler`` compares trials, recorded in the settings for the analysis."""
        return ()

    def restored(self, tuner, exp: storage.Location, cfg) -> str | None:
        """Put back what Ray's restore of ``tuner`` lost; returns a line saying what (None: nothing)."""
        return None

    def search_algorithm(self, cfg, exp: storage.Location, space: dict):
        """The search algorithm of a new search (``cfg``: its ``SearchConfig``): Optuna's sampler through Ray
        (:mod:`search.searcher`), its study in ``exp`` or at ``storage.optuna_url``."""
        study = optuna_storage(exp, cfg.optuna_url, new=True)
        return build_searcher(space, cfg.points_to_evaluate(), study, cfg.seed, cfg.max_t, cfg.max_concurrent,
                              cfg.algorithm, cfg.side_points(), cfg.objective_modes())

    def param_space(self, space: dict, baselines: dict[str, dict]) -> dict | None:
        """Ray's search space, for a strategy that does without the searcher (None: the searcher's)."""
        return None

    def changing_keys(self, space: dict) -> tuple[str, ...]:
        """The config keys whose values change during a trial (:func:`search.population.changing_keys` when a
        trial may go on from another's checkpoint, else none)."""
        return changing_keys(space) if self.shares_checkpoints else ()


class KeepBaselines:
    """Put first among the bases of a Ray scheduler: a baseline trial trains to ``max_epochs`` and none of its
    results reaches the scheduler, so it is never stopped early, exploited, cloned, or counted in a rung or a
    quantile. A baseline is a yardstick, not a candidate: every comparison with it is at the same epoch.

    Args:
        baselines: name -> the baseline's point of the space (how its trial's config is recognised).
        max_epochs: epochs per trial (``scheduler.max_t``).
    """

    max_epochs: float = math.inf  # a scheduler pickled before it knew max_epochs resumes with this

    def __init__(self, *args, baselines: dict[str, dict] | None = None, max_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.baselines = dict(baselines or {})
        self.max_epochs = max_epochs

    def __setstate__(self, state: dict) -> None:
        if "max_t" in state and "max_epochs" not in state:  # a population scheduler pickled before the rename
            state["max_epochs"] = state.pop("max_t")
        self.__dict__.update(state)

    def is_baseline(self, trial) -> bool:
        return baseline_name(trial.config, self.baselines) is not None

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self.is_baseline(trial):
            return TrialScheduler.STOP if result.get(ITERATION, 0) >= self.max_epochs else TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if self.is_baseline(trial):
            self.on_trial_remove(tune_controller, trial)  # ends it without recording its result
        else:
            super().on_trial_complete(tune_controller, trial, result)
