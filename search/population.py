"""Weight schedules: a population of trials whose loss weights change during training (``scheduler.type: pbt``
or ``pb2``, Ray Tune's Population Based Training and Population Based Bandits).

Every ``perturbation_interval`` epochs a trial in the population's bottom quarter (by ``val_s3_cd``) takes the
checkpoint of one in the top quarter (weights, optimizer state, epoch) and goes on training it under new loss
weights: PBT multiplies each weight by 1.2 or 0.8 or redraws it from its log-uniform range; PB2 chooses them
with a Gaussian-process bandit over the population's progress (needs GPy and scikit-learn; until it has seen the
donor improve over one interval, it copies the donor's weights unchanged). A trial's config therefore changes
mid-run, and the results table records, epoch by epoch, the weights it trained with. Ray runs the population
asynchronously: a trial exploits when it reaches an interval, against the scores the others last reported.

- **What changes:** the continuous parameters of the space (the loss weights, and the learning rate when it is
  searched). Categorical ones (sample counts) are drawn once per trial and kept. PB2 works on each log-uniform
  weight's log10 (a config key ``log10:loss.w2_edge``, which :func:`trial_params` turns back into the weight), so
  that its Gaussian process sees a decade as a decade.
- **Initial population:** random draws from the space (Ray's basic variant generator, seeded); Optuna takes no
  part (Ray refuses a search algorithm with these schedulers, and a trial whose weights change has no single
  point for a sampler to learn from).
- **Baselines** run first with their own values and are never perturbed, exploited or ranked (they stay out of
  the population's quantiles), like ASHA's.

The schedulers are :mod:`search.schedulers.pbt` and :mod:`search.schedulers.pb2`; this module holds what they
share with the trials, the results callback and ``train-best``.
"""
from __future__ import annotations

import math

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from ray import tune

from p2m.names import PB2

LOG10 = "log10:"  # prefix of a weight's log10 in a PB2 trial's config


def changing_keys(space: dict[str, BaseDistribution]) -> tuple[str, ...]:
    """The config keys a population scheduler changes during a trial: the space's continuous ones."""
    return tuple(key for key, d in space.items() if isinstance(d, FloatDistribution))


def param_space(space: dict[str, BaseDistribution], kind: str, baseline_keys: tuple[str, ...] = ()) -> dict:
    """The Ray search space of the initial population (PB2: log-uniform weights as their log10, uniform).

    Ray's generator takes a baseline's values only for keys of this space, so every other key a baseline sets
    (``baseline_keys``) is here too, as None: "the trial does not set it" (:func:`trial_params`).
    """
    out: dict = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            out[key] = tune.choice(list(d.choices))
        elif kind == PB2 and d.log:
            out[LOG10 + key] = tune.uniform(math.log10(d.low), math.log10(d.high))
        else:
            out[key] = tune.loguniform(d.low, d.high) if d.log else tune.uniform(d.low, d.high)
    return {**{key: None for key in baseline_keys if key not in out}, **out}


def trial_params(params: dict) -> dict:
    """A trial's config as config keys: each ``log10:KEY`` becomes ``KEY = 10 ** value``; a ``KEY`` the trial gives
    itself wins (a baseline's own value, beside the log10 the generator drew for it); None means unset. The
    identity for a config without either (an Optuna search's)."""
    out = {key[len(LOG10):]: 10.0 ** float(value) for key, value in params.items() if key.startswith(LOG10)}
    out.update({key: value for key, value in params.items() if not key.startswith(LOG10) and value is not None})
    return out


def __getattr__(name: str):
    """The class paths of PBT and PB2 schedulers pickled (into ``tuner.pkl``) by launches before
    :mod:`search.schedulers` held them: a resume of such a search finds them here."""
    if name in ("BaselinePBT", "BaselinePB2"):
        from search.schedulers import pb2, pbt
        return getattr(pbt if name == "BaselinePBT" else pb2, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
