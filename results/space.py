"""An experiment's search space: the searched config keys and their Optuna distributions, stored in Optuna's
own JSON form (``distribution_to_json``) by ``p2m search launch`` and read back exactly; and what a
distribution contains (a baseline inside the space is enqueued to the study, one outside runs beside it,
and only points inside it enter a rebuilt study)."""
from __future__ import annotations

import json
import os

from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution, distribution_to_json,
                                  json_to_distribution)

from p2m.names import SPACE_FILE
from results import storage
from results.parquet import ResultsError


def write_space(experiment_dir: str | os.PathLike, space: dict[str, BaseDistribution]) -> storage.Location:
    """``SPACE_FILE``: ``{config key: Optuna's JSON of its distribution}``."""
    data = {key: json.loads(distribution_to_json(dist)) for key, dist in space.items()}
    return storage.write_bytes(storage.join(experiment_dir, SPACE_FILE), json.dumps(data, indent=1).encode())


def read_space(experiment_dir: str | os.PathLike) -> dict[str, BaseDistribution]:
    """The distributions ``write_space`` stored.

    Raises:
        ResultsError: naming the file, when it is missing, not JSON, or holds something that is not an Optuna
            distribution.
    """
    path = storage.join(experiment_dir, SPACE_FILE)
    try:
        data = json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing (every search writes its space there)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a mapping of config keys to distributions")
    space = {}
    for key, value in data.items():
        try:
            space[key] = json_to_distribution(json.dumps(value))
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultsError(f"{path}: {key}: not an Optuna distribution ({exc})") from None
    return space


def contains(dist: BaseDistribution, value) -> bool:
    """Whether ``value`` is a point of ``dist``."""
    if isinstance(dist, FloatDistribution):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and dist.low <= value <= dist.high
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    raise TypeError(f"unsupported distribution {dist!r}")
