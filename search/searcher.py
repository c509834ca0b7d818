"""The searcher of a search whose scheduler takes one (:attr:`search.schedulers.base.Strategy.uses_searcher`):
Optuna's sampler through Ray, behind a ConcurrencyLimiter."""
from __future__ import annotations

from ray.tune.search import ConcurrencyLimiter

from p2m.names import MODE, OBJECTIVE, TPE
from search.optuna_adapter import STUDY_NAME, build_sampler
from search.ray_adapter import P2MOptunaSearch


def build_searcher(space: dict, points: list[dict], storage, seed: int, max_t: int, max_concurrent: int,
                   algorithm: str = TPE, side_points: list[dict] | None = None,
                   objectives: dict[str, str] | None = None):
    """``P2MOptunaSearch`` over ``space`` (Optuna distributions), behind a ConcurrencyLimiter: first the
    ``side_points`` (baselines outside the space, never told to Optuna), then the baseline ``points`` of the
    space, then the sampler's. TPE's first ``len(points) + 2`` (at least 5) trials of the study are random draws.
    ``objectives`` (column -> mode, more than one): a multi-objective study (Optuna's TPE handles several)."""
    metric, mode = OBJECTIVE, MODE
    if objectives and len(objectives) > 1:
        metric, mode = list(objectives), list(objectives.values())
    sampler = build_sampler(algorithm, seed, n_startup_trials=max(len(points) + 2, 5))
    searcher = P2MOptunaSearch(space=space, metric=metric, mode=mode, points_to_evaluate=points or None,
                               sampler=sampler, seed=seed, storage=storage, study_name=STUDY_NAME, max_t=max_t,
                               side_points=side_points)
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
