"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is one file holding plain containers and tensors only:
    format: int; epoch: int (epochs completed); config: nested dict (``TrainConfig.to_dict()``);
    model, optimizer, scheduler (the learning-rate schedule), scaler: state dicts; ema (when ``optim.ema_epochs``
    > 0): the averaged weights (``{"module": state dict, "updates": int, "decay": float}``), which validation
    measured; torch_rng: ByteTensor; cuda_rng: list of ByteTensor; history: list of per-epoch metric dicts;
    best: the metric dict of the best epoch so far; lr_horizon_steps: int (the schedule's length); loss_weights
    (learned loss weights only): a state dict. ``best.pt`` holds the evaluated weights (the EMA's when there is
    one) as ``model``.

A *final* checkpoint (:func:`final_weights`: the last epoch of a run that will not be continued, a search trial's
at ``max_t``, a retraining run's ``WEIGHTS_FILE``) holds only what evaluating and predicting read: epoch, config,
model (the evaluated weights), history and best; about a quarter of the size (no optimizer moments, no second
copy of the weights for the EMA).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from p2m.atomic import atomic_write_bytes
from p2m.config import TrainConfig, from_dict
from p2m.names import BEST_FILE, CHECKPOINT_FILE, EPOCH, WEIGHTS_FILE

FORMAT = 1


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (plain containers and tensors) to ``path`` through a temporary name."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint file; or, from a directory, its ``CHECKPOINT_FILE`` (a checkpoint directory)
    or else its ``BEST_FILE`` (a run directory of ``p2m train``).

    Raises:
        ValueError: naming the file, when it is missing, unreadable or not a p2m checkpoint.
    """
    path = checkpoint_file(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: not a readable checkpoint (an empty file)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        detail = (str(exc).splitlines() or [""])[0][:200]  # some have no message at all
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}{': ' if detail else ''}{detail})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state or "config" not in state:
        raise ValueError(f"{path}: not a p2m checkpoint (format {FORMAT} with model and config)")
    return state


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The file :func:`load_checkpoint` reads for ``path``: a file, or in a directory its ``CHECKPOINT_FILE`` (a
    checkpoint directory), else its ``BEST_FILE`` (a ``p2m train`` run), else its ``WEIGHTS_FILE`` (a retrained run
    of ``p2m search train-best``)."""
    path = Path(path)
    if path.is_dir():
        path = next((p for p in (path / CHECKPOINT_FILE, path / BEST_FILE, path / WEIGHTS_FILE) if p.is_file()),
                    path / CHECKPOINT_FILE)
    return path


def final_weights(state: dict) -> dict:
    """The final checkpoint of the checkpoint ``state`` (module docstring): what is evaluated, not what resumes."""
    weights = state["ema"]["module"] if "ema" in state else state["model"]
    return {EPOCH: state[EPOCH], "config": state["config"], "model": weights,
            "history": state.get("history", []), "best": state.get("best", {})}


def is_final(state: dict) -> bool:
    """Whether ``state`` is a final checkpoint (nothing to continue training from)."""
    return "optimizer" not in state


def checkpoint_config(state: dict, source: str = "checkpoint") -> TrainConfig:
    """The resolved config saved in a checkpoint."""
    return from_dict(state["config"], base=TrainConfig(), source=source)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, its TrainConfig) from a checkpoint file or directory: the weights validation
    measured (the EMA's, when the run kept one).

    Raises:
        ValueError: naming the file, when it is not a p2m checkpoint (:func:`load_checkpoint`), its weights do
            not fit the model its config builds (naming the first key that differs), or a weight is NaN or
            infinite (naming the first such tensor).
    """
    path = checkpoint_file(path)
    return model_from_state(load_checkpoint(path), str(path), device)


def model_from_state(state: dict, source: str, device: str | torch.device = "cpu"):
    """(model in eval mode, its TrainConfig) from a checkpoint ``state`` already read from ``source`` (named in
    errors, as :func:`load_model`'s)."""
    import dataclasses
    import warnings

    from p2m.model import Pixel2Mesh
    from p2m.model.backbone import resolve_norm

    cfg = checkpoint_config(state, source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the saved weights replace the backbone's init, so its weights file need not exist here
        norm = resolve_norm(cfg.model.backbone_norm, bool(cfg.model.backbone_weights))
        model = Pixel2Mesh(dataclasses.replace(cfg.model, backbone_weights="", backbone_norm=norm), cfg.data.image_size)
    weights = state["ema"]["module"] if "ema" in state else state["model"]
    check_weights(weights, model.state_dict(), source)
    model.load_state_dict(weights)
    return model.to(device).eval(), cfg


def check_weights(weights: dict, expected: dict, source: str) -> None:
    """Raise a one-line ValueError naming ``source`` unless ``weights`` has exactly the keys and shapes of the
    state dict ``expected`` and every floating-point tensor in it is finite."""
    if not isinstance(weights, dict):
        raise ValueError(f"{source}: the model's weights are not a state dict")
    for key in [*expected, *(k for k in weights if k not in expected)]:
        if key not in weights:
            raise ValueError(f"{source}: weights of another model (no {key}; was it written by another profile?)")
        if key not in expected:
            raise ValueError(f"{source}: weights of another model (unexpected {key}; was it written by another "
                             "profile?)")
        got, want = weights[key], expected[key]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ValueError(f"{source}: weights of another model ({key} is {shape}, this config's model has "
                             f"{tuple(want.shape)}; was it written by another profile?)")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise ValueError(f"{source}: the weights hold NaN or infinite values (first in {key})")
