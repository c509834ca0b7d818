"""Bring an experiment directory written before the settings and the space became strict records (issue 14)
up to date, in place, so that ``p2m results analyze``, ``resume`` and ``train-best`` read it:

    python benchmarks/migrate_experiment.py EXPERIMENT_DIR [EXPERIMENT_DIR ...]

- ``search_config.yaml``: gets ``rungs``, ASHA's milestones as Ray's scheduler computes them for the recorded
  grace period, reduction factor and max_t (none for FIFO), and any other setting added since at its default
  (``val_per_view: false``); loses ``base.model.template_levels``; and its base loss gets
  ``w{1,2,3}_move: 0``, because searches before issue 13 trained without the move term.
- ``space.json``: ``{key: {log_uniform: [lo, hi]} | {choice: [...]}}`` becomes Optuna's JSON of the same
  distributions.
Each file is rewritten through a temporary name; a directory already in the new form is left as it is.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution

from p2m.atomic import atomic_write_bytes
from p2m.names import FIXED_WEIGHTS, SETTINGS_FILE, SPACE_FILE
from results.settings import SearchSettings
from results.space import write_space
from search.config import load_experiment_config
from search.ray_adapter import asha_milestones
from search.schedulers import strategy


def migrate(exp: Path) -> list[str]:
    done = []
    path = exp / SETTINGS_FILE
    data = yaml.safe_load(path.read_text())
    fields = [f.name for f in dataclasses.fields(SearchSettings)]
    if "rungs" not in data:
        rungs = ()
        if data["scheduler"] == "asha":
            rungs = asha_milestones(strategy("asha").build(SearchSettings(
                max_t=data["max_t"], grace_period=data["grace_period"], reduction_factor=data["reduction_factor"]),
                {}, {}))
        data["rungs"] = list(rungs)
        data["base"]["model"].pop("template_levels", None)
        for w in FIXED_WEIGHTS:
            data["base"]["loss"].setdefault(w.field, 0.0)
        done.append(f"{path}: rungs {list(rungs)}, no move term recorded")
    added = [name for name in fields if name not in data]
    if added or list(data) != fields + ["base"]:
        defaults = SearchSettings().to_dict()
        data = {key: data.get(key, defaults.get(key)) for key in fields + ["base"]}
        atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())
        done.append(f"{path}: settings in the current order" + (f", {', '.join(added)} at their defaults"
                                                                 if added else ""))
    space_path = exp / SPACE_FILE
    space = json.loads(space_path.read_text())
    if any("log_uniform" in d or "choice" in d for d in space.values()):
        converted = {key: (FloatDistribution(*d["log_uniform"], log=True) if "log_uniform" in d
                           else CategoricalDistribution(d["choice"])) for key, d in space.items()}
        write_space(exp, converted)
        done.append(f"{space_path}: {len(converted)} distributions in Optuna's JSON form")
    load_experiment_config(path)  # reads strictly, or says what is still wrong
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", type=Path)
    for exp in parser.parse_args().experiments:
        for line in migrate(exp) or [f"{exp}: already current"]:
            print(line)


if __name__ == "__main__":
    main()
