"""The search's own configuration: a YAML file with the base training config inside it.

```yaml
name: demo                       # experiment name (the directory under storage.path)
base:                            # a p2m TrainConfig mapping: profile, data, model, loss, optim, seed
  profile: tiny
  data: {root: demo/data}
search: {num_samples: 12, max_concurrent: 2, seed: 0, algorithm: tpe, search_lr: false, val_per_view: false,
         objectives: []}         # [val_s3_cd, val_s3_normal_consistency]: Optuna's multi-objective TPE; ASHA and the
                                 # trials table keep to the first, val_s3_cd (or run scheduler.type fifo)
baselines:                       # trials every search runs first, never stopped early; values default to the
  published: {}                  # base config's. Pixel2Mesh's reference loss (search.space.PUBLISHED); also named:
  seed: {}                       # seed, seed_all_stages, learned (search.space.NAMED_BASELINES). Outside the space: run
                                 # beside the search, never told to the sampler
scheduler: {type: asha, max_t: 8, grace_period: 1, reduction_factor: 2}   # type: asha, fifo, pbt or pb2
                                 # (pbt/pb2: weights change during a trial every perturbation_interval: 2 epochs)
resources: {cpu: 1, gpu: 0}      # per trial; gpu may be a fraction (0.25 = four trials per GPU)
failure: {max_failures: 1}
storage: {path: ./experiments, optuna_url: "", keep_best: 3}   # optuna_url "" = a journal file in the experiment
                                 # dir; keep_best: ended trials whose last checkpoint is kept besides the baselines'
                                 # (search.retention: the others' are deleted)
space: {loss.w2_edge: {log_uniform: [0.01, 1.0]}, loss.w1_normal: null}   # overrides of the default space
race: {top: 3, seeds: 5, min_rounds: 3}   # at the end of launch: the 3 best trials and published retrained on up
                                 # to 5 fresh seeds, losers dropped by a paired test (search.race); top 0: no race
```
Unknown keys and bad values are refused with the key named. ``scheduler.max_t`` is the number of
epochs a trial trains (``base.optim.max_epochs`` is set to it).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from optuna.distributions import BaseDistribution

from p2m.codec import coerce
from p2m.config import TrainConfig, from_dict, read_yaml
from results import storage
from results.settings import SearchSettings, read_settings_file
from search.schedulers import strategy
from search.space import NAMED_BASELINES, BaselinePoint, baseline_points, space_from_dict

SECTIONS = ("name", "base", "search", "baselines", "scheduler", "resources", "failure", "storage", "space", "race")


@dataclass(frozen=True)
class SearchConfig(SearchSettings):
    """The search's settings (:class:`results.settings.SearchSettings`, which the analysis reads too) and the
    base training config every trial starts from. A trial trains ``max_t`` epochs: ``base.optim.max_epochs``
    is ``max_t`` (the YAML's ``scheduler.max_t`` sets it)."""

    base: TrainConfig = field(default_factory=lambda: _with_epochs(TrainConfig(), SearchSettings.max_t))

    def __post_init__(self):
        super().__post_init__()
        if not strategy(self.scheduler).uses_searcher and self.objectives:  # strategy(): a registered name
            raise ValueError(f"search.objectives needs Optuna's sampler, which scheduler.type {self.scheduler} "
                             "does without: give one objective or another scheduler")
        if self.base.optim.max_epochs != self.max_t:  # one iteration = one epoch
            raise ValueError(f"base.optim.max_epochs ({self.base.optim.max_epochs}) must equal scheduler.max_t "
                             f"({self.max_t}): a trial trains max_t epochs")

    def with_max_t(self, max_t: int) -> SearchConfig:
        """This config with trials of ``max_t`` epochs."""
        return dataclasses.replace(self, max_t=max_t, base=_with_epochs(self.base, max_t))

    def space(self) -> dict[str, BaseDistribution]:
        """The search space: the default ranges under the YAML's ``space:`` overrides (resolved once per config)."""
        return dict(self._resolved()[0])

    def points_to_evaluate(self) -> list[dict]:
        """The baselines inside the space, in the order the searcher evaluates them first."""
        return [p.params for p in self.baseline_trials().values() if p.in_space]

    def side_points(self) -> list[dict]:
        """The baselines outside the space: their trials run beside the search (:func:`search.space.baseline_points`)."""
        return [p.params for p in self.baseline_trials().values() if not p.in_space]

    def named_points(self) -> dict[str, dict]:
        """Baseline name -> what its trial is given (how its trial is recognised)."""
        return {name: p.params for name, p in self.baseline_trials().items()}

    def baseline_trials(self) -> dict[str, BaselinePoint]:
        """Baseline name -> its trial's params and whether they lie in the space. A name of
        ``search.space.NAMED_BASELINES`` (``published``, ``seed``, ``seed_all_stages``) starts from that baseline's
        values; the YAML's values override them."""
        return {name: BaselinePoint(dict(p.params), p.in_space) for name, p in self._resolved()[1].items()}

    def _resolved(self) -> tuple[dict[str, BaseDistribution], dict[str, BaselinePoint]]:
        """The space and the baselines' points, built at the first call and kept (the config is frozen)."""
        if "_resolved_once" not in self.__dict__:
            space = space_from_dict(self.space_overrides, self.base, self.search_lr)
            named = {name: {**NAMED_BASELINES.get(name, {}), **values} for name, values in self.baselines.items()}
            object.__setattr__(self, "_resolved_once", (space, baseline_points(space, self.base, named)))
        return self.__dict__["_resolved_once"]

    def to_dict(self) -> dict:
        return {**SearchSettings.to_dict(self), "base": self.base.to_dict()}


def load_search_config(path: str | Path, overrides: dict | None = None) -> SearchConfig:
    """Read a search YAML (see the module docstring); ``overrides`` are top-level fields to replace.

    Raises:
        ValueError: naming the file and key.
    """
    return search_config_from_dict(read_yaml(path, "search config"), str(path), overrides)


def search_config_from_dict(data: dict, source: str = "search config", overrides: dict | None = None) -> SearchConfig:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping at the top level")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    kwargs: dict = {}
    if "name" in data:
        kwargs["name"] = str(data["name"])
    kwargs["base"] = from_dict(data.get("base") or {}, source=f"{source}: base")
    _take(kwargs, data, "search", {"num_samples": int, "max_concurrent": int, "seed": int, "algorithm": str,
                                   "search_lr": bool, "val_per_view": bool, "objectives": list}, source)
    if "objectives" in kwargs:
        kwargs["objectives"] = tuple(str(column) for column in kwargs["objectives"])
    _take(kwargs, data, "scheduler", {"type": str, "max_t": int, "grace_period": int, "reduction_factor": float,
                                      "perturbation_interval": int}, source, rename={"type": "scheduler"})
    _take(kwargs, data, "resources", {"cpu": float, "gpu": float}, source)
    _take(kwargs, data, "failure", {"max_failures": int}, source)
    _take(kwargs, data, "storage", {"path": str, "optuna_url": str, "keep_best": int}, source,
          rename={"path": "storage_path"})
    _take(kwargs, data, "race", {"top": int, "seeds": int, "min_rounds": int}, source,
          rename={"top": "race_top", "seeds": "race_seeds", "min_rounds": "race_min_rounds"})
    if "baselines" in data:
        baselines = data["baselines"] or {}
        if not isinstance(baselines, dict) or not all(isinstance(v, (dict, type(None))) for v in baselines.values()):
            raise ValueError(f"{source}: baselines must map a name to {{config.key: value}}")
        kwargs["baselines"] = {name: dict(values or {}) for name, values in baselines.items()}
    if "space" in data:
        if not isinstance(data["space"], (dict, type(None))):
            raise ValueError(f"{source}: space must be a mapping")
        kwargs["space_overrides"] = dict(data["space"] or {})
    if "max_t" not in kwargs:
        kwargs["max_t"] = kwargs["base"].optim.max_epochs
    kwargs.update(overrides or {})
    if "name" in kwargs:
        storage.check_name(kwargs["name"], f"{source}: name")
    if kwargs["max_t"] < 1:
        raise ValueError(f"{source}: scheduler.max_t must be >= 1, got {kwargs['max_t']!r}")
    kwargs["base"] = _with_epochs(_absolute_paths(kwargs["base"]), kwargs["max_t"])
    try:
        cfg = SearchConfig(**kwargs)
        cfg.points_to_evaluate()  # checks the space and that every baseline lies inside it
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return cfg


def _absolute_paths(base: TrainConfig) -> TrainConfig:
    """Relative dataset and weight paths are taken from the launching directory: trials run elsewhere."""
    data, model = base.data, base.model
    if data.root:
        data = dataclasses.replace(data, root=str(Path(data.root).expanduser().resolve()))
    if model.backbone_weights:
        model = dataclasses.replace(model, backbone_weights=str(Path(model.backbone_weights).expanduser().resolve()))
    if model.template not in ("generated",):
        model = dataclasses.replace(model, template=str(Path(model.template).expanduser().resolve()))
    return dataclasses.replace(base, data=data, model=model)


def _take(kwargs: dict, data: dict, section: str, types: dict, source: str, rename: dict | None = None) -> None:
    values = data.get(section) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{source}: {section} must be a mapping")
    for key, value in values.items():
        if key not in types:
            raise ValueError(f"{source}: {section}.{key}: unknown key (known: {', '.join(types)})")
        kwargs[(rename or {}).get(key, key)] = coerce(value, types[key], f"{source}: {section}.{key}")


def load_experiment_config(path: str | Path) -> SearchConfig:
    """The config an experiment recorded at launch (its settings file), read strictly: a missing, unknown or
    mistyped field is a one-line error naming the file and the field.

    Raises:
        ValueError: naming the file.
    """
    data = read_settings_file(path)
    source = str(path)
    if "base" not in data:
        raise ValueError(f"{source}: missing field 'base'")
    settings = SearchSettings.from_dict({k: v for k, v in data.items() if k != "base"}, source)
    base = from_dict(data["base"], base=TrainConfig(), source=f"{source}: base")
    try:
        return SearchConfig(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(SearchSettings)},
                            base=base)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def _with_epochs(base: TrainConfig, epochs: int) -> TrainConfig:
    return dataclasses.replace(base, optim=dataclasses.replace(base.optim, max_epochs=epochs))
