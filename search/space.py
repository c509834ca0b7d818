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

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from p2m.config import LossConfig, TrainConfig, from_dict
from p2m.names import STAGES, weight
from results.space import contains, describe

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


def baseline_points(space: dict[str, BaseDistribution], base: TrainConfig, baselines: dict[str, dict]) -> list[dict]:
    """One full point of the space per baseline: the baseline's values, the base config's elsewhere.

    A baseline runs as a trial of the search, which sets only the searched keys; a value it gives for
    any other key must therefore equal the base config's (else the baseline would silently not be what
    its name says).

    Raises:
        ValueError: when a baseline names a key the config lacks, gives an unsearched key a value other
            than the base config's, or has a value outside the space.
    """
    flat = base.flat()
    points = []
    for name, values in baselines.items():
        for key, value in values.items():
            if key not in flat:
                raise ValueError(f"baseline {name!r}: {key} is not a config key (e.g. loss.w2_edge)")
            if key not in space and value != flat[key]:
                raise ValueError(f"baseline {name!r}: {key}={value!r} is not searched, and the base config has "
                                 f"{flat[key]!r}, so the baseline cannot run as named (set the key in base, or "
                                 "remove the baseline)")
        point = {}
        for key, domain in space.items():
            value = values.get(key, flat[key])
            if not contains(domain, value):
                raise ValueError(f"baseline {name!r}: {key}={value!r} lies outside the search space "
                                 f"({describe(domain)})")
            point[key] = value
        points.append(point)
    return points


def apply_params(base: TrainConfig, params: dict) -> TrainConfig:
    """``base`` with ``{"section.field": value}`` applied (checked as any config value)."""
    nested: dict = {}
    for key, value in params.items():
        section, _, field = key.partition(".")
        if field:
            nested.setdefault(section, {})[field] = value
        else:
            nested[section] = value
    return from_dict(nested, base=base, source="search point")


def baseline_name(config: dict | None, baselines: dict[str, dict]) -> str | None:
    """The baseline whose point ``config`` is (the searcher enqueues them verbatim), else None."""
    for name, point in baselines.items():
        if config and all(key in config and _same(config[key], value) for key, value in point.items()):
            return name
    return None


def _log_uniform(low: float, high: float) -> FloatDistribution:
    if not 0 < low < high:
        raise ValueError(f"log_uniform needs 0 < low < high, got [{low}, {high}]")
    return FloatDistribution(low, high, log=True)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b
