"""``p2m data preview``: a contact sheet of views with their ground-truth points projected on them."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from p2m.data.camera import project
from p2m.data.datfile import read_dat
from p2m.data.image import read_image
from p2m.data.layout import Sample
from p2m.render import save_figure

def contact_sheet(samples: list[Sample], out: str | os.PathLike, columns: int = 6, max_points: int = 1500,
                  seed: int = 0) -> Path:
    """Draw each sample's image with its GT points (coloured by depth) and write one PNG.

    Each tile's title gives the category, model id prefix, view, and the share of points that fall
    inside the alpha mask, the number that says whether image and ground truth agree.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        raise ValueError("samples must not be empty")
    rng = np.random.default_rng(seed)
    rows = -(-len(samples) // columns)
    cols = min(columns, len(samples))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, sample in zip(axes.ravel(), samples):
        rgba = read_image(sample.image_path)
        gt = read_dat(sample.dat_path)
        uv = project(gt[:, :3], rgba.shape[0])
        share = mask_coverage(uv, rgba[..., 3])
        pick = rng.choice(len(gt), size=min(max_points, len(gt)), replace=False)
        checker = _checkerboard(rgba.shape[0])
        alpha = rgba[..., 3:] / 255.0
        ax.imshow((rgba[..., :3] / 255.0) * alpha + checker * (1 - alpha))
        ax.scatter(uv[pick, 0], uv[pick, 1], s=0.4, c=-gt[pick, 2], cmap="plasma", linewidths=0)
        ax.set_xlim(-0.5, rgba.shape[1] - 0.5)
        ax.set_ylim(rgba.shape[0] - 0.5, -0.5)
        ax.set_title(f"{sample.category} {sample.model_id[:6]} v{sample.view}\n{100 * share:.1f}% in mask",
                     fontsize=7)
    return save_figure(fig, out, "GT points projected with the Pixel2Mesh camera (colour = depth)")

def mask_coverage(uv: np.ndarray, alpha: np.ndarray) -> float:
    """Share of projected points (P, 2) whose nearest pixel has alpha > 0 (points off the image count as outside)."""
    S = alpha.shape[0]
    col, row = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    on_image = (col >= 0) & (col < S) & (row >= 0) & (row < S)
    inside = np.zeros(len(uv), dtype=bool)
    inside[on_image] = alpha[row[on_image], col[on_image]] > 0
    return float(inside.mean())

def _checkerboard(size: int, cell: int = 8) -> np.ndarray:
    idx = (np.arange(size) // cell)
    board = ((idx[:, None] + idx[None, :]) % 2) * 0.08 + 0.88
    return np.repeat(board[..., None], 3, axis=-1)
