"""FIFO: every trial trains to ``scheduler.max_t``, none is stopped early."""
from __future__ import annotations

from ray.tune.schedulers import FIFOScheduler

from p2m.names import FIFO
from search.schedulers.base import KeepBaselines, Strategy, register


class BaselineFIFO(KeepBaselines, FIFOScheduler):
    pass


@register
class Fifo(Strategy):
    name = FIFO

    def build(self, cfg, space, baselines):
        return BaselineFIFO(baselines=baselines, max_epochs=cfg.max_t)
