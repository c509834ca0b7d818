"""A search's settings: one dataclass, written by ``p2m search launch`` into the experiment's ``SETTINGS_FILE``
and read back strictly (a missing or unknown field is an error naming it), by the analysis and by ``search``.

``search.config.SearchConfig`` is this dataclass plus the base training config (``base:``, p2m's
``TrainConfig``), which the analysis does not need and does not read.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field

from p2m.codec import coerce
from p2m.names import ALGORITHMS, ASHA, OBJECTIVE, SETTINGS_FILE, TPE, val_metric_mode
from p2m.yamlio import parse_yaml
from results import storage

# fields an experiment written before them lacks: read as their defaults (every other field must be there)
ADDED_LATER = ("race_top", "race_seeds", "race_min_rounds", "keep_best")


@dataclass(frozen=True)
class SearchSettings:
    name: str = "p2m-search"  # the experiment's directory under storage_path
    num_samples: int = 12  # trials, the baselines included
    max_concurrent: int = 2
    seed: int = 0
    algorithm: str = TPE  # one of ALGORITHMS
    search_lr: bool = False
    val_per_view: bool = False  # store every validation's per-view metrics (VIEWS_DIR), for paired comparisons
    # () = one objective, OBJECTIVE; else validation columns for Optuna's multi-objective TPE, the first OBJECTIVE
    # (what ASHA stops on and the trials table ranks by), e.g. (val_s3_cd, val_s3_normal_consistency)
    objectives: tuple[str, ...] = ()
    baselines: dict = field(default_factory=lambda: {"published": {}})  # name -> {config key: value}
    scheduler: str = ASHA  # a name of search.schedulers' registry (which checks it), as recorded at launch
    max_t: int = 8  # epochs per trial
    grace_period: int = 1
    reduction_factor: float = 2.0
    perturbation_interval: int = 2  # pbt / pb2: epochs between a trial's chances to exploit and explore
    # ASHA's milestones as its scheduler computed them, recorded at launch (empty for FIFO and before launch)
    rungs: tuple[float, ...] = ()
    cpu: float = 1.0  # per trial
    gpu: float = 0.0  # per trial; a fraction shares a GPU (0.25: four trials)
    max_failures: int = 1
    storage_path: str = "./experiments"
    optuna_url: str = ""  # "" = a journal file in the experiment directory
    # ended trials whose last checkpoint is kept (by the ranking rule), besides the baselines' (search.retention)
    keep_best: int = 3
    space_overrides: dict = field(default_factory=dict)
    # the race at the end of launch (search.race): the race_top best trials and published, on up to race_seeds fresh
    # seeds, none dropped before race_min_rounds; race_top 0: no race
    race_top: int = 0
    race_seeds: int = 5
    race_min_rounds: int = 3

    def __post_init__(self):
        for key in ("num_samples", "max_concurrent", "max_t", "grace_period", "perturbation_interval"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)!r}")
        if self.reduction_factor <= 1:
            raise ValueError(f"scheduler.reduction_factor must be > 1, got {self.reduction_factor}")
        if self.grace_period > self.max_t:
            raise ValueError(f"scheduler.grace_period ({self.grace_period}) exceeds scheduler.max_t ({self.max_t})")
        if not (math.isfinite(self.reduction_factor) and math.isfinite(self.cpu) and math.isfinite(self.gpu)):
            raise ValueError(f"scheduler.reduction_factor, resources.cpu and resources.gpu must be finite, got "
                             f"{self.reduction_factor}, {self.cpu}, {self.gpu}")
        if self.cpu <= 0 or self.gpu < 0:
            raise ValueError(f"resources: cpu must be > 0 and gpu >= 0, got cpu={self.cpu}, gpu={self.gpu}")
        if self.race_top < 0 or self.race_min_rounds < 2 or self.race_seeds < self.race_min_rounds:
            raise ValueError(f"race: top must be >= 0 and seeds >= min_rounds >= 2, got top={self.race_top}, "
                             f"seeds={self.race_seeds}, min_rounds={self.race_min_rounds}")
        if self.max_failures < 0:
            raise ValueError(f"failure.max_failures must be >= 0, got {self.max_failures}")
        if self.keep_best < 0:
            raise ValueError(f"storage.keep_best must be >= 0, got {self.keep_best}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"search.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.objectives:
            if len(self.objectives) < 2 or self.objectives[0] != OBJECTIVE or len(set(self.objectives)) != len(
                    self.objectives):
                raise ValueError(f"search.objectives must be {OBJECTIVE} followed by other validation metrics, "
                                 f"each once, got {list(self.objectives)}")
            for column in self.objectives:
                val_metric_mode(column)  # a validation metric, else a ValueError naming it

    def objective_modes(self) -> dict[str, str]:
        """Objective column -> "min" or "max", in order (one entry, OBJECTIVE, for a single-objective search)."""
        return {column: val_metric_mode(column) for column in self.objectives or (OBJECTIVE,)}

    def rung_epochs(self) -> list[int]:
        """The epochs at which ASHA decides, ascending: each recorded milestone below max_t, rounded up (a
        trial meets milestone m at the first epoch >= m)."""
        return sorted({math.ceil(m) for m in self.rungs if m < self.max_t})

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["rungs"] = list(self.rungs)
        return out

    @staticmethod
    def from_dict(data: dict, source: str = "search settings") -> SearchSettings:
        """Read the fields strictly: every field present, none unknown, each value of its type.

        Raises:
            ValueError: naming ``source`` and the field.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping, got {type(data).__name__}")
        fields = [f.name for f in dataclasses.fields(SearchSettings)]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{source}: unknown field {unknown[0]!r}")
        missing = [name for name in fields if name not in data and name not in ADDED_LATER]
        if missing:
            raise ValueError(f"{source}: missing field {missing[0]!r}")
        hints = typing.get_type_hints(SearchSettings)
        try:
            return SearchSettings(**{name: coerce(data[name], hints[name], name) for name in fields if name in data})
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None


def read_settings(experiment_dir: str | os.PathLike) -> SearchSettings:
    """The settings of an experiment directory, read strictly (the ``base:`` section is skipped).

    Raises:
        ValueError: naming the file, when it is missing, not YAML, or a field is missing, unknown or mistyped.
    """
    path = storage.join(experiment_dir, SETTINGS_FILE)
    data = read_settings_file(path)
    return SearchSettings.from_dict({k: v for k, v in data.items() if k != "base"}, str(path))


def read_settings_file(path: str | os.PathLike) -> dict:
    """The settings file's mapping, or a one-line ValueError naming it (read with the limits of
    :func:`p2m.yamlio.parse_yaml`: at most 1 MiB, 32 levels deep, 100 aliases)."""
    try:
        data = parse_yaml(storage.read_bytes(path), str(path))
    except FileNotFoundError:
        raise ValueError(f"{path}: not a p2m search experiment (no {SETTINGS_FILE})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of search settings")
    return data

