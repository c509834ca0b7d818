"""The searcher (Optuna through Ray) and the scheduler (ASHA or FIFO), set up from a search's settings."""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from p2m.names import MODE, OBJECTIVE
from results.schema import ITERATION
from search.optuna_adapter import STUDY_NAME, build_sampler
from search.ray_adapter import P2MOptunaSearch


def build_searcher(space: dict, points: list[dict], storage, seed: int, max_t: int, max_concurrent: int,
                   algorithm: str = "tpe"):
    """``P2MOptunaSearch`` over ``space`` (Optuna distributions), the baseline ``points`` first, behind a
    ConcurrencyLimiter. TPE's first ``len(points) + 2`` (at least 5) trials are random draws."""
    sampler = build_sampler(algorithm, seed, n_startup_trials=max(len(points) + 2, 5))
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
