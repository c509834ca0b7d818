"""The search's own configuration: a YAML file with the base training config inside it.

```yaml
name: demo                       # experiment name (the directory under storage.path)
base:                            # a p2m TrainConfig mapping: profile, data, model, loss, optim, seed
  profile: tiny
  data: {root: demo/data}
search: {num_samples: 12, max_concurrent: 2, seed: 0, algorithm: tpe, search_lr: false}
baselines:                       # points every search evaluates first; values default to the base config's
  published: {}                  # Pixel2Mesh's reference loss: every LossConfig default (search.space.PUBLISHED)
scheduler: {type: asha, max_t: 8, grace_period: 1, reduction_factor: 2}
resources: {cpu: 1, gpu: 0}      # per trial; gpu may be a fraction (0.25 = four trials per GPU)
failure: {max_failures: 1}
storage: {path: ./experiments, optuna_url: ""}   # optuna_url "" = a journal file in the experiment dir
space: {loss.w2_edge: {log_uniform: [0.01, 1.0]}, loss.w1_normal: null}   # overrides of the default space
```
Unknown keys and bad values are refused with the key named. ``scheduler.max_t`` is the number of
epochs a trial trains (``base.optim.max_epochs`` is set to it).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from p2m.config import TrainConfig, from_dict, read_yaml
from search.space import PUBLISHED, Domain, baseline_points, space_from_dict

SECTIONS = ("name", "base", "search", "baselines", "scheduler", "resources", "failure", "storage", "space")


@dataclass(frozen=True)
class SearchConfig:
    name: str = "p2m-search"
    base: TrainConfig = field(default_factory=TrainConfig)
    num_samples: int = 12
    max_concurrent: int = 2
    seed: int = 0
    algorithm: str = "tpe"  # or "random"
    search_lr: bool = False
    baselines: dict = field(default_factory=lambda: {"published": {}})
    scheduler: str = "asha"  # or "fifo" (no early stopping)
    max_t: int = 8  # epochs per trial
    grace_period: int = 1
    reduction_factor: float = 2.0
    cpu: float = 1.0
    gpu: float = 0.0
    max_failures: int = 1
    storage_path: str = "./experiments"
    optuna_url: str = ""
    space_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        for key in ("num_samples", "max_concurrent", "max_t", "grace_period"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)!r}")
        if self.reduction_factor <= 1:
            raise ValueError(f"scheduler.reduction_factor must be > 1, got {self.reduction_factor}")
        if self.grace_period > self.max_t:
            raise ValueError(f"scheduler.grace_period ({self.grace_period}) exceeds scheduler.max_t ({self.max_t})")
        if self.cpu <= 0 or self.gpu < 0:
            raise ValueError(f"resources: cpu must be > 0 and gpu >= 0, got cpu={self.cpu}, gpu={self.gpu}")
        if self.max_failures < 0:
            raise ValueError(f"failure.max_failures must be >= 0, got {self.max_failures}")
        if self.algorithm not in ("tpe", "random"):
            raise ValueError(f"search.algorithm must be 'tpe' or 'random', got {self.algorithm!r}")
        if self.scheduler not in ("asha", "fifo"):
            raise ValueError(f"scheduler.type must be 'asha' or 'fifo', got {self.scheduler!r}")
        if self.base.optim.max_epochs != self.max_t:  # one iteration = one epoch
            object.__setattr__(self, "base", dataclasses.replace(
                self.base, optim=dataclasses.replace(self.base.optim, max_epochs=self.max_t)))

    def space(self) -> dict[str, Domain]:
        return space_from_dict(self.space_overrides, self.base, self.search_lr)

    def points_to_evaluate(self) -> list[dict]:
        resolved = {name: ({**PUBLISHED, **values} if name == "published" else values)
                    for name, values in self.baselines.items()}
        return baseline_points(self.space(), self.base, resolved)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["base"] = self.base.to_dict()
        return out


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
                                   "search_lr": bool}, source)
    _take(kwargs, data, "scheduler", {"type": str, "max_t": int, "grace_period": int, "reduction_factor": float},
          source, rename={"type": "scheduler"})
    _take(kwargs, data, "resources", {"cpu": float, "gpu": float}, source)
    _take(kwargs, data, "failure", {"max_failures": int}, source)
    _take(kwargs, data, "storage", {"path": str, "optuna_url": str}, source, rename={"path": "storage_path"})
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
    kwargs["base"] = _absolute_paths(kwargs["base"])
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
        want = types[key]
        ok = isinstance(value, want) and not (want in (int, float) and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ValueError(f"{source}: {section}.{key}: expected {want.__name__}, got {value!r}")
        kwargs[(rename or {}).get(key, key)] = value
