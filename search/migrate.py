"""``p2m search migrate``: an experiment written before its settings and its space became strict records (issue 14)
brought up to date in place, so that ``p2m results analyze``, ``resume`` and ``train-best`` read it.

- ``SETTINGS_FILE`` gets ``rungs`` (ASHA's milestones as Ray's scheduler computes them for the recorded grace
  period, reduction factor and max_t; none for FIFO) and every setting added since at its default, in the
  current order; it loses ``base.model.template_levels``; and its base loss gets ``w{1,2,3}_move: 0``, because
  searches before issue 13 trained without the move term.
- ``SPACE_FILE``: ``{key: {log_uniform: [lo, hi]} | {choice: [...]}}`` becomes Optuna's JSON of the same
  distributions.

Each file is rewritten whole (through a temporary name); an experiment already in the current form is left as it
is. The settings are then read back strictly: what is still wrong is a one-line error naming the file.
"""
from __future__ import annotations

import dataclasses

import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution

from p2m.names import ASHA, FIXED_WEIGHTS, SETTINGS_FILE, SPACE_FILE
from p2m.yamlio import parse_yaml
from results import storage
from results.lease import Lease
from results.settings import SearchSettings, read_settings_file
from results.space import write_space
from search.config import load_experiment_config
from search.schedulers import strategy

OLD_SPACE_KEYS = ("log_uniform", "choice")  # the space's own JSON form before Optuna's


def migrate(exp: storage.Location) -> list[str]:
    """Bring the experiment ``exp`` up to date; returns a line per file changed (none: already current).

    Raises:
        ValueError: naming the file, when a file is missing or not of an experiment of this project.
    """
    with Lease(exp, "migrate"):
        done = _settings(storage.join(exp, SETTINGS_FILE)) + _space(exp)
        load_experiment_config(storage.join(exp, SETTINGS_FILE))  # read strictly, or say what is still wrong
    return done


def _settings(path: storage.Location) -> list[str]:
    data = read_settings_file(path)
    base = data.get("base")
    if not isinstance(base, dict) or not all(isinstance(base.get(section), dict) for section in ("model", "loss")):
        raise ValueError(f"{path}: no base.model and base.loss sections: not the settings of a search")
    done = []
    fields = [f.name for f in dataclasses.fields(SearchSettings)]
    if "rungs" not in data:
        rungs = ()
        if data.get("scheduler") == ASHA:
            missing = [key for key in ("max_t", "grace_period", "reduction_factor") if key not in data]
            if missing:
                raise ValueError(f"{path}: missing field {missing[0]!r}")
            settings = SearchSettings(max_t=data["max_t"], grace_period=data["grace_period"],
                                      reduction_factor=data["reduction_factor"])
            scheduling = strategy(ASHA)
            rungs = scheduling.rungs(scheduling.build(settings, {}, {}))
        data["rungs"] = list(rungs)
        data["base"]["model"].pop("template_levels", None)
        for w in FIXED_WEIGHTS:
            data["base"]["loss"].setdefault(w.field, 0.0)
        done.append(f"{path}: rungs {list(rungs)}, no move term recorded")
    added = [name for name in fields if name not in data]
    if added or list(data) != fields + ["base"]:
        defaults = SearchSettings().to_dict()
        data = {key: data.get(key, defaults.get(key)) for key in fields + ["base"]}
        storage.write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())
        done.append(f"{path}: settings in the current order" + (f", {', '.join(added)} at their defaults"
                                                                 if added else ""))
    return done


def _space(exp: storage.Location) -> list[str]:
    path = storage.join(exp, SPACE_FILE)
    try:
        space = parse_yaml(storage.read_bytes(path), str(path))  # JSON is YAML; read with its limits
    except FileNotFoundError:
        raise ValueError(f"{path}: missing (every search writes its space there)") from None
    if not isinstance(space, dict) or not all(isinstance(d, dict) for d in space.values()):
        raise ValueError(f"{path}: not a search space (a mapping of config keys to distributions)")
    if not any(key in d for d in space.values() for key in OLD_SPACE_KEYS):
        return []
    converted = {key: (FloatDistribution(*d["log_uniform"], log=True) if "log_uniform" in d
                       else CategoricalDistribution(d["choice"])) for key, d in space.items()}
    write_space(exp, converted)
    return [f"{path}: {len(converted)} distributions in Optuna's JSON form"]


__all__ = ["migrate"]
