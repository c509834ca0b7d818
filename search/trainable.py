"""The Ray Tune trainable: the only module that calls Ray's report and checkpoint API.

A trial is ``p2m.train.fit`` on the base config with the sampled point applied. Every epoch it
reports the epoch's metrics with the epoch's checkpoint (one report = one ``training_iteration`` = one
epoch, ASHA's time unit), and a restarted trial (after a node loss, a driver restart or a retry)
continues from ``tune.get_checkpoint()``. A loss that becomes NaN or infinite raises
``NonFiniteLossError`` out of the trial, which Ray records as the trial's error.
"""
from __future__ import annotations

import dataclasses
import logging
import platform
import shutil
import tempfile
from pathlib import Path

from ray import tune

from p2m.config import TrainConfig, from_dict, to_plain
from p2m.train import fit, resolve_device
from results.schema import CONFIG_PREFIX
from search.space import apply_params


def train_trial(params: dict, base: dict) -> None:
    """Ray Tune function trainable.

    Args:
        params: the sampled point, ``{"loss.w2_edge": 0.3, ...}``.
        base: the base ``TrainConfig`` as a dict (``to_dict()``), bound with ``tune.with_parameters``.
    """
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not a line per checkpoint in the driver's log
    cfg = apply_params(from_dict(base, base=TrainConfig(), source="search base"), params)
    device = str(resolve_device(cfg.device))
    extra = {"device": device, "hostname": platform.node(),
             **{f"{CONFIG_PREFIX}{k}": to_plain(v) for k, v in cfg.flat().items()}}
    workdir = Path(tempfile.mkdtemp(prefix="p2m-trial-"))
    try:
        resume_from = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_from = Path(checkpoint.to_directory(str(workdir / "restored")))

        def on_epoch(metrics: dict, checkpoint_dir: Path) -> None:
            tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

        fit(dataclasses.replace(cfg, device=device), workdir / "run", on_epoch=on_epoch, resume_from=resume_from,
            progress=False, save_best=False, log=None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def trial_resources(cpu: float, gpu: float) -> dict:
    """Ray resources of one trial: ``gpu`` may be a fraction (0.25: four trials share a GPU)."""
    if cpu <= 0 or gpu < 0:
        raise ValueError(f"resources: cpu must be > 0 and gpu >= 0, got cpu={cpu}, gpu={gpu}")
    return {"cpu": cpu, "gpu": gpu}

