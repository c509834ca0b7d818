"""Inference: meshes from images, and the OBJ files, previews and curves a training run leaves behind."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from p2m.config import TrainConfig
from p2m.data.dataset import P2MDataset, collate_p2m, prepare_image
from p2m.data.datfile import read_dat
from p2m.data.image import read_image
from p2m.data.layout import Sample
from p2m.evaluate import evaluate
from p2m.names import EPOCH, PREVIEWS_DIR, STAGES, TRAIN_LOSS, stage_key, val_column
from p2m.render import preview_png, save_figure, write_obj


@torch.no_grad()
def predict_image(model, cfg: TrainConfig, rgba: np.ndarray) -> list[np.ndarray]:
    """The three stages' vertices (V_s, 3) for one RGBA view (uint8 (S, S, 4))."""
    device = next(model.parameters()).device
    x = prepare_image(rgba, cfg.data.image_size)[None].to(device)
    model.eval()
    return [v[0].float().cpu().numpy() for v in model(x).verts]


def stage_faces(model) -> list[np.ndarray]:
    return [model.level(i).faces.cpu().numpy() for i in range(3)]


def write_stage_objs(prefix: str | os.PathLike, verts: list[np.ndarray], faces: list[np.ndarray]) -> list[Path]:
    """``{prefix}_s1.obj`` ... ``{prefix}_s3.obj``."""
    return [write_obj(f"{prefix}_s{s}.obj", v, f) for s, v, f in zip(STAGES, verts, faces)]


def write_previews(model, cfg: TrainConfig, samples: list[Sample], out_dir: str | os.PathLike) -> list[Path]:
    """For each sample: OBJ meshes of every stage in ``out_dir/meshes`` and a preview PNG in
    ``out_dir/previews`` captioned with each stage's CD x 1000 against the full GT."""
    out_dir = Path(out_dir)
    device = next(model.parameters()).device
    faces = stage_faces(model)
    loader = torch.utils.data.DataLoader(P2MDataset(samples, cfg.data.gt_samples, cfg.data.image_size, cfg.seed),
                                         batch_size=1, collate_fn=collate_p2m)
    metrics = evaluate(model, loader, device).items
    written = []
    for sample, row in zip(samples, metrics):
        name = f"{sample.synset}_{sample.model_id}_{sample.view}"
        rgba = read_image(sample.image_path)
        verts = predict_image(model, cfg, rgba)
        write_stage_objs(out_dir / "meshes" / name, verts, faces)
        captions = [f"CDx1000 {row[stage_key(s, 'cd_x1000')]:.2f}" for s in STAGES]
        gt = read_dat(sample.dat_path)[:, :3]
        written.append(preview_png(out_dir / PREVIEWS_DIR / f"{name}.png", rgba, verts, faces, gt,
                                   title=f"{sample.synset}/{sample.model_id} view {sample.view}", metrics=captions))
    return written


def plot_curves(history: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Training loss and validation CD x 1000 of every stage, per epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("history is empty: nothing to plot")
    epochs = [row[EPOCH] for row in history]
    fig, (ax_loss, ax_cd) = plt.subplots(1, 2, figsize=(9, 3.4))
    losses = [row[TRAIN_LOSS] for row in history]
    ax_loss.plot(epochs, losses, marker="o", ms=3)
    # learned weighting's log-variance terms can take the total below 0: a log axis only when it can hold it
    ax_loss.set(xlabel="epoch", ylabel="weighted training loss", yscale="log" if min(losses) > 0 else "linear",
                title="training loss")
    for s in STAGES:
        ax_cd.plot(epochs, [row[val_column(s, "cd_x1000")] for row in history], marker="o", ms=3,
                   label=f"stage {s}")
    ax_cd.set(xlabel="epoch", ylabel="CD x 1000", title="validation chamfer distance")
    ax_cd.legend()
    for ax in (ax_loss, ax_cd):
        ax.grid(alpha=0.3)
    return save_figure(fig, path, title)
