"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is one file holding plain containers and tensors only:
    format: int; epoch: int (epochs completed); config: nested dict (``TrainConfig.to_dict()``);
    model, optimizer, scaler: state dicts; ema (when ``optim.ema_epochs`` > 0): the averaged weights
    (``{"module": state dict, "updates": int, "decay": float}``), which validation measured; torch_rng: ByteTensor;
    cuda_rng: list of ByteTensor; history: list of per-epoch metric dicts; best: the metric dict of the best
    epoch so far. ``best.pt`` holds the evaluated weights (the EMA's when there is one) as ``model``.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from p2m.atomic import atomic_write_bytes
from p2m.config import TrainConfig, from_dict
from p2m.names import BEST_FILE, CHECKPOINT_FILE

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
    path = Path(path)
    if path.is_dir():
        path = next((p for p in (path / CHECKPOINT_FILE, path / BEST_FILE) if p.is_file()), path / CHECKPOINT_FILE)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state or "config" not in state:
        raise ValueError(f"{path}: not a p2m checkpoint (format {FORMAT} with model and config)")
    return state


def checkpoint_config(state: dict, source: str = "checkpoint") -> TrainConfig:
    """The resolved config saved in a checkpoint."""
    return from_dict(state["config"], base=TrainConfig(), source=source)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, its TrainConfig) from a checkpoint file or directory: the weights validation
    measured (the EMA's, when the run kept one)."""
    import dataclasses
    import warnings

    from p2m.model import Pixel2Mesh
    from p2m.model.backbone import resolve_norm

    state = load_checkpoint(path)
    cfg = checkpoint_config(state, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the saved weights replace the backbone's init, so its weights file need not exist here
        norm = resolve_norm(cfg.model.backbone_norm, bool(cfg.model.backbone_weights))
        model = Pixel2Mesh(dataclasses.replace(cfg.model, backbone_weights="", backbone_norm=norm), cfg.data.image_size)
    model.load_state_dict(state["ema"]["module"] if "ema" in state else state["model"])
    return model.to(device).eval(), cfg
