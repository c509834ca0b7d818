"""Population Based Bandits (``scheduler.type: pb2``): PBT whose new weights a Gaussian-process bandit over the
population's progress chooses, each log-uniform weight as its log10 (:mod:`search.population`)."""
from __future__ import annotations

import math

from ray.tune.schedulers.pb2 import PB2 as RayPB2

from p2m.names import PB2
from search.population import LOG10
from search.schedulers.base import KeepBaselines, register
from search.schedulers.pbt import LastEpochKept, Pbt


class BaselinePB2(LastEpochKept, KeepBaselines, RayPB2):
    pass


@register
class Pb2(Pbt):
    name = PB2

    def build(self, cfg, space, baselines):
        bounds = {}
        for key in self.changing_keys(space):
            d = space[key]
            bounds[LOG10 + key if d.log else key] = ([math.log10(d.low), math.log10(d.high)] if d.log
                                                     else [d.low, d.high])
        return BaselinePB2(hyperparam_bounds=bounds, **self.common(cfg, baselines))
