"""The search space: the 12 per-stage loss weights, the sample counts, optionally the learning rate.

Declared here once, as Optuna distributions from the start: Ray's ``OptunaSearch`` takes them as they are,
``p2m search launch`` stores them in the experiment in Optuna's own JSON form (:mod:`results.space`), and
the analysis reads them back exactly. A search YAML's ``space:`` overrides them. Parameter names are the
config keys (``loss.w2_edge``, ``data.gt_samples``), so a sampled point is applied to the base
:class:`~p2m.config.TrainConfig` with :func:`apply_params` and lands in the results table as
``config.loss.w2_edge``: a weight is a distribution, a sampled value under its config key, a
``LossConfig`` field and a results column, nothing else.

The move term is not searched: ``loss.w{1,2,3}_move`` stay at the reference's values (0, 0.033, 0.033)
unless ``space:`` names them. It penalises every displacement a block makes, rigid ones included, and
so pulls in nearly the same direction as that block's Laplacian-change term (which a search already
tunes); two near-collinear weights per block would spend trials on a ridge rather than on the trade-offs
between chamfer, edges, smoothness and normals. The paper lists four loss terms (Sec. 3.5); move is in
the authors' code only, tuned once for both blocks. Keeping it fixed keeps the space at the 12 per-stage
weights of those four terms (11 degrees of freedom with the anchor) and comparable with earlier searches.

Scale anchor: ``loss.w3_chamfer`` stays at 1. Adam's update is invariant to multiplying the whole loss
by a constant (up to its epsilon), so 12 free weights carry only 11 degrees of freedom; fixing the
final stage's chamfer weight removes the redundant direction and makes weights comparable between
trials. Set ``space: {loss.w3_chamfer: {log_uniform: [lo, hi]}}`` to search it anyway.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from p2m.codec import unflatten
from p2m.config import LossConfig, TrainConfig, from_dict
from p2m.names import EDGE_TARGET, LAPLACIAN_SMOOTH_SQ, NORMAL_VERTEX, STAGES, weight
from results.space import contains

ANCHOR = weight(3, "chamfer").param


def default_space(base: TrainConfig, search_lr: bool = False) -> dict[str, BaseDistribution]:
    """The default space around the published weights (each range spans 2-4 decades around them)."""
    space: dict[str, BaseDistribution] = {}
    for s in STAGES:
        if s != 3:
            space[weight(s, "chamfer").param] = _log_uniform(0.1, 10.0)  # relative to the anchor
        space[weight(s, "edge").param] = _log_uniform(3e-3, 3.0)  # published 0.1
        space[weight(s, "laplacian").param] = _log_uniform(3e-3, 3.0) if s == 1 else _log_uniform(1e-2, 10.0)
        space[weight(s, "normal").param] = _log_uniform(1e-6, 1e-2)  # published 1.6e-4
    gt = base.data.gt_samples  # the profile's count and its halves and doubles
    space["data.gt_samples"] = CategoricalDistribution(sorted({max(250, gt // 2), gt, gt * 2}))
    for s in STAGES:  # 0 = the mesh vertices (Pixel2Mesh); else points sampled on the surface
        space[f"loss.pred_samples{s}"] = CategoricalDistribution((0, gt))
    if search_lr:
        space["optim.lr"] = _log_uniform(base.optim.lr / 10, base.optim.lr * 10)
    return space


def space_from_dict(data: dict | None, base: TrainConfig, search_lr: bool = False) -> dict[str, BaseDistribution]:
    """The default space with a YAML mapping applied: ``{key: {log_uniform: [lo, hi]} | {choice: [...]} | null}``
    (null removes a key: it stays at the base config's value).

    Raises:
        ValueError: naming the key, for a key the config does not have or a malformed domain.
    """
    space = default_space(base, search_lr)
    known = set(base.flat())
    for key, spec in (data or {}).items():
        where = f"space.{key}"
        if key not in known:
            raise ValueError(f"{where}: not a config key (e.g. loss.w2_edge, data.gt_samples)")
        if spec is None:
            space.pop(key, None)
            continue
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ValueError(f"{where}: expected {{log_uniform: [lo, hi]}} or {{choice: [...]}}, got {spec!r}")
        (kind, args), = spec.items()
        try:
            if kind == "log_uniform":
                lo, hi = args
                space[key] = _log_uniform(float(lo), float(hi))
            elif kind == "choice":
                space[key] = CategoricalDistribution(tuple(args))
            else:
                raise ValueError(f"unknown domain {kind!r} (log_uniform or choice)")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    for key, dist in space.items():  # every value of the space must make a valid config
        probe = dist.low if isinstance(dist, FloatDistribution) else dist.choices[0]
        try:
            apply_params(base, {key: probe})
        except ValueError as exc:
            raise ValueError(f"space.{key}: {exc}") from None
    return space


# The `published` baseline: Pixel2Mesh's reference loss, i.e. every field of LossConfig at its default (the
# 12 weights, the move weights, the chamfer's opposite factor, the vertices as chamfer points and the
# reference forms of the terms). LossConfig's definition cites the reference's file and line for each number.
PUBLISHED = {f"loss.{key}": value for key, value in dataclasses.asdict(LossConfig()).items()}

# The seed reimplementation's loss as its code trained (the project grew from it): per stage, the weights of
# [chamfer, normal, Laplacian, edge], each stage's terms multiplied by its stage weight; 4096 GT points; and the
# forms its code computes, which differ from its paper's text: chamfer = mean squared nearest-neighbour
# distance each way, summed (chamfer_opposite 1); normal = mean (1 - cos) of each vertex normal and its
# nearest GT point's normal ("vertex"); Laplacian = mean squared distance of a vertex from its neighbours'
# mean ("smooth_sq"); edge = mean squared edge length ("target" with length 0); no move term; the chamfer
# measured at the vertices.
SEED_WEIGHTS = {1: (1.0, 0.0, 100.0, 100.0), 2: (1.0, 5.0, 100.0, 30.0), 3: (3.0, 10.0, 100.0, 10.0)}
SEED_TERMS = ("chamfer", "normal", "laplacian", "edge")  # the order of SEED_WEIGHTS' rows
SEED_STAGE_WEIGHTS = (1.0, 0.0, 0.0)  # as it ran: stages 2 and 3 got no loss at all


def seed_point(stage_weights: tuple[float, float, float]) -> dict:
    """The seed reimplementation's loss (see ``SEED_WEIGHTS``) with its stages multiplied by ``stage_weights``."""
    point: dict = {"data.gt_samples": 4096, "loss.chamfer_opposite": 1.0, "loss.edge_form": EDGE_TARGET,
                   "loss.edge_target_length": 0.0, "loss.laplacian_form": LAPLACIAN_SMOOTH_SQ,
                   "loss.normal_form": NORMAL_VERTEX}
    for stage, factor in zip(STAGES, stage_weights):
        for term, value in zip(SEED_TERMS, SEED_WEIGHTS[stage]):
            point[weight(stage, term).param] = factor * value
        point[weight(stage, "move").param] = 0.0
        point[f"loss.pred_samples{stage}"] = 0
    return point


# Baselines a search YAML can name with no values (``seed: {}``); values given beside a name override its own.
# ``learned``: the published loss with its three chamfer weights learned during training (p2m.weighting), the
# cheap alternative to a search.
NAMED_BASELINES = {"published": PUBLISHED, "seed": seed_point(SEED_STAGE_WEIGHTS),
                   "seed_all_stages": seed_point((1.0, 1.0, 1.0)),
                   "learned": {**PUBLISHED, "loss.weighting": "learned"}}


class BaselinePoint(NamedTuple):
    """A baseline's trial: ``params`` (config key -> value) and whether they lie inside the search space."""

    params: dict
    in_space: bool


def baseline_points(space: dict[str, BaseDistribution], base: TrainConfig,
                    baselines: dict[str, dict]) -> dict[str, BaselinePoint]:
    """What each baseline's trial is given: the baseline's values, the base config's elsewhere.

    A baseline whose every value lies inside the space, and which gives every unsearched key the base config's
    value, is a point of the space: the searcher evaluates it first and learns from it. Any other baseline
    (a weight of 0 or 100 outside a log-uniform range, another loss form, another chamfer factor) runs
    beside the search: its trial gets the searched keys (the baseline's values or the base config's) and every
    key the baseline sets, and the searcher never hears of it, so the sampler's model of the space sees only
    points of the space (a log-uniform density has no place for a 0).

    Raises:
        ValueError: naming the baseline and key, for a key the config lacks or a value the config refuses.
    """
    flat = base.flat()
    out = {}
    for name, values in baselines.items():
        for key in values:
            if key not in flat:
                raise ValueError(f"baseline {name!r}: {key} is not a config key (e.g. loss.w2_edge)")
        params = {key: values.get(key, flat[key]) for key in space}
        beside = {key: value for key, value in values.items() if key not in space and not _same(value, flat[key])}
        inside = not beside and all(contains(domain, params[key]) for key, domain in space.items())
        if not inside:
            params.update({key: value for key, value in values.items() if key not in space})
        apply_params(base, params, source=f"baseline {name!r}")
        out[name] = BaselinePoint(params, inside)
    return out


def apply_params(base: TrainConfig, params: dict, source: str = "search point") -> TrainConfig:
    """``base`` with ``{"section.field": value}`` applied (checked as any config value; errors name ``source``)."""
    return from_dict(unflatten(params), base=base, source=source)


def baseline_name(config: dict | None, baselines: dict[str, dict]) -> str | None:
    """The baseline whose point ``config`` is (the searcher enqueues them verbatim), else None. Where several
    match, the one that sets the most keys: ``learned`` is ``published``'s point and one key more."""
    matches = [name for name, point in baselines.items()
               if config and all(key in config and _same(config[key], value) for key, value in point.items())]
    return max(matches, key=lambda name: len(baselines[name]), default=None)


def _log_uniform(low: float, high: float) -> FloatDistribution:
    if not 0 < low < high:
        raise ValueError(f"log_uniform needs 0 < low < high, got [{low}, {high}]")
    return FloatDistribution(low, high, log=True)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b
