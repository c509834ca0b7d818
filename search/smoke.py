"""The smoke test's dataset, on every node that runs its trials.

``p2m search launch --smoke-test`` without ``--data`` trains on a small synthetic dataset that it makes itself
(:data:`SMOKE_SYNTH`: seeded, so every copy is the same, made in seconds) and marks the config with
``data.smoke``. The driver makes it beside local experiments (a shared file system on a cluster), or in its
machine's cache when the experiments are on object storage; a trial on another host finds nothing at that path
and makes its own copy in its node's cache (:func:`local_data`), so the smoke test needs no shared disk.
"""
from __future__ import annotations

import dataclasses
import fcntl
from pathlib import Path

from p2m.config import TrainConfig
from p2m.data.synth import SynthConfig, generate
from p2m.names import SYNTH_META_FILE
from results import storage

SMOKE_DATA = "smoke-data"  # its directory beside local experiments, and its kind in a machine's cache
SMOKE_SYNTH = {"models_per_category": 3, "views": 2, "seed": 0}  # 3 models of 2 views per category


def smoke_data(storage_path: str) -> Path:
    """The driver's smoke dataset, made if missing: ``<storage_path>/smoke-data`` for local experiments, else
    this machine's cache (:func:`smoke_cache_dir`)."""
    if storage.is_remote(storage_path):
        return make_smoke_data(smoke_cache_dir())
    return make_smoke_data(Path(storage_path).expanduser() / SMOKE_DATA)


def local_data(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with a dataset this node can read: ``cfg`` itself unless it trains on the smoke dataset
    (``data.smoke``) and its root holds none here (the driver's path on another host); then with this node's own
    copy, made now if this node has none yet."""
    if not cfg.data.smoke or _complete(Path(cfg.data.root)):
        return cfg
    root = make_smoke_data(smoke_cache_dir())
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(root)))


def smoke_cache_dir() -> Path:
    """Where this machine keeps its copy of the smoke dataset (:func:`results.storage.cache_dir`: under
    ``$P2M_CACHE_DIR``, else the user's cache directory), whichever experiment it serves."""
    return storage.cache_dir("seed{seed}-{models_per_category}x{views}".format(**SMOKE_SYNTH), SMOKE_DATA)


def make_smoke_data(path: str | Path) -> Path:
    """Make the smoke dataset at ``path`` unless it is there; returns ``path``.

    Processes of one machine take turns (a lock file beside ``path``): the first makes it, the others wait and
    find it made. A maker that does not take the lock and renames its copy into place first (``generate`` writes a
    temporary directory and renames it) leaves this one's rename failing: that copy is used, this one dropped.
    """
    path = Path(path)
    if _complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not _complete(path):
            try:
                generate(SynthConfig(out=str(path), workers=1, **SMOKE_SYNTH), progress=False)
            except OSError:
                if not _complete(path):  # not the lost race of the rename: a real error
                    raise
    return path


def _complete(root: Path) -> bool:
    """Whether ``root`` holds a whole synthetic dataset (``generate`` writes its settings last, then renames)."""
    return (root / SYNTH_META_FILE).is_file()


__all__ = ["SMOKE_DATA", "SMOKE_SYNTH", "local_data", "make_smoke_data", "smoke_cache_dir", "smoke_data"]
