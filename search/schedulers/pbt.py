"""Population Based Training (``scheduler.type: pbt``): every ``perturbation_interval`` epochs a trial of the
bottom quarter takes the checkpoint of one of the top quarter and goes on under its weights multiplied by 1.2 or
0.8, or redrawn (:mod:`search.population`)."""
from __future__ import annotations

from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.search import BasicVariantGenerator

from p2m.names import MODE, OBJECTIVE, PBT
from results.schema import ITERATION
from search.population import param_space
from search.schedulers.base import KeepBaselines, Strategy, register


class LastEpochKept:
    """A population scheduler that leaves a trial's last epoch (``max_epochs``) out of the population: Ray learns
    that the trial has finished only after that result, so the result would enter the quantiles while the trial
    still counts as live. As a donor, its checkpoint would give the trial that clones it no epoch left to train
    (it would end at once, without a row for the epoch it was given); in the bottom quarter, the finished trial
    would be sent back to train another's checkpoint. The trial stays in the population with the score and
    checkpoint of its last interval before ``max_epochs``."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(ITERATION, 0) >= self.max_epochs:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class BaselinePBT(LastEpochKept, KeepBaselines, PopulationBasedTraining):
    pass


@register
class Pbt(Strategy):
    name = PBT
    uses_searcher = False  # Ray refuses a searcher beside PBT and PB2; its own generator draws the population
    shares_checkpoints = True

    def build(self, cfg, space, baselines):
        mutations = {key: param_space({key: space[key]}, PBT)[key] for key in self.changing_keys(space)}
        return BaselinePBT(resample_probability=0.25, hyperparam_mutations=mutations,
                           **self.common(cfg, baselines))

    @staticmethod
    def common(cfg, baselines) -> dict:
        """The arguments PBT and PB2 share."""
        return dict(time_attr=ITERATION, metric=OBJECTIVE, mode=MODE, perturbation_interval=cfg.perturbation_interval,
                    quantile_fraction=0.25, baselines=baselines, max_epochs=cfg.max_t)

    def checkpoints_to_keep(self, cfg):
        return 2 * cfg.perturbation_interval + 2  # a donor's checkpoint is cloned a few epochs after it was written

    def param_space(self, space, baselines):
        return param_space(space, self.name, tuple(dict.fromkeys(key for point in baselines.values() for key in point)))

    def search_algorithm(self, cfg, exp, space):
        """Ray's generator of the initial population: the baselines first, then seeded draws."""
        return BasicVariantGenerator(points_to_evaluate=list(cfg.named_points().values()) or None,
                                     max_concurrent=cfg.max_concurrent, random_state=cfg.seed)
