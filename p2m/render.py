"""Meshes out: OBJ files, and PNG previews (input | stage 1 | stage 2 | stage 3 | ground truth).

The previews are drawn with matplotlib, with no renderer dependency: faces are projected through
the dataset's camera (:func:`p2m.data.camera.project`), so the first row lines up with the input
view, sorted far to near (painter's algorithm) and shaded by the angle to the camera. The second
row turns every shape 90 degrees about the vertical axis through the GT centre, to show depth.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from p2m.data.camera import project
from p2m.atomic import atomic_write_bytes

STAGE_COLOURS = ("#8fb8de", "#7fc8a9", "#f0b775")


def write_obj(path: str | os.PathLike, verts: np.ndarray, faces: np.ndarray) -> Path:
    """Write a triangle mesh as Wavefront OBJ (atomically). verts (V, 3) float, faces (F, 3) int, 0-based.

    Raises:
        ValueError: for a wrong shape, or a NaN or infinite vertex (nothing is written).
    """
    verts, faces = np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape (V, 3), got {verts.shape}")
    if not np.isfinite(verts).all():
        bad = int((~np.isfinite(verts)).any(axis=1).sum())
        raise ValueError(f"{path}: not written, {bad} of {len(verts)} vertices are NaN or infinite")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {faces.shape}")
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def turn_about_vertical(points: np.ndarray, centre: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate (..., 3) camera-frame points about the camera's Y axis through ``centre``."""
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return (points - centre) @ rot.T + centre


def draw_mesh(ax, verts: np.ndarray, faces: np.ndarray, image_size: int, colour: str = "#8fb8de") -> None:
    """Draw a shaded mesh on a matplotlib axis in image coordinates (pixel (0, 0) top left)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgb

    uv = project(verts, image_size)  # (V, 2)
    tri = verts[faces]  # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    to_camera = -tri.mean(1)  # the camera sits at the origin
    to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True) + 1e-12
    light = np.abs((normal * to_camera).sum(1))  # two-sided
    order = np.argsort(tri[:, :, 2].mean(1))  # most negative Z (farthest) first
    base = np.array(to_rgb(colour))
    colours = np.clip(base[None] * (0.25 + 0.75 * light[order, None]), 0, 1)
    ax.add_collection(PolyCollection(uv[faces[order]], facecolors=colours, edgecolors=colours * 0.85,
                                     linewidths=0.15))
    _image_axes(ax, image_size)


def draw_points(ax, points: np.ndarray, image_size: int, max_points: int = 3000, seed: int = 0) -> None:
    """Scatter GT points in image coordinates, coloured by depth."""
    rng = np.random.default_rng(seed)
    if len(points) > max_points:
        points = points[rng.choice(len(points), max_points, replace=False)]
    uv = project(points, image_size)
    ax.scatter(uv[:, 0], uv[:, 1], s=0.8, c=-points[:, 2], cmap="viridis", linewidths=0)
    _image_axes(ax, image_size)


def preview_png(path: str | os.PathLike, image: np.ndarray, stage_verts: list[np.ndarray], stage_faces: list[np.ndarray],
                gt_points: np.ndarray | None = None, title: str = "", metrics: list[str] | None = None) -> Path:
    """One PNG: row 1 the input and each stage seen from the input's camera, row 2 turned 90 degrees.

    Args:
        image: uint8 (S, S, 3|4) the input view.
        stage_verts, stage_faces: per stage, (V_s, 3) camera-frame vertices and (F_s, 3) faces.
        gt_points: (P, 3) ground truth, drawn in the last column when given.
        metrics: one caption per stage (e.g. its CD), shown under the stage's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    S = image.shape[0]
    cols = 1 + len(stage_verts) + (gt_points is not None)
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4.6), squeeze=False)
    centre = gt_points.mean(0) if gt_points is not None else stage_verts[-1].mean(0)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("input", fontsize=9)
    _image_axes(axes[0, 0], S)
    axes[1, 0].axis("off")
    for i, (v, f) in enumerate(zip(stage_verts, stage_faces)):
        caption = f"stage {i + 1} ({len(v)} v)" + (f"\n{metrics[i]}" if metrics else "")
        colour = STAGE_COLOURS[i % len(STAGE_COLOURS)]
        draw_mesh(axes[0, i + 1], v, f, S, colour)
        draw_mesh(axes[1, i + 1], turn_about_vertical(v, centre, 90), f, S, colour)
        axes[0, i + 1].set_title(caption, fontsize=9)
    if gt_points is not None:
        draw_points(axes[0, -1], gt_points, S)
        draw_points(axes[1, -1], turn_about_vertical(gt_points, centre, 90), S)
        axes[0, -1].set_title("ground truth", fontsize=9)
    axes[1, 1].set_ylabel("turned 90°", fontsize=9)
    return save_figure(fig, path, title)


def save_figure(fig, path: str | os.PathLike, title: str = "", dpi: int = 110) -> Path:
    """Title, lay out and write a matplotlib figure as PNG (atomically), then close it."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _image_axes(ax, size: int) -> None:
    ax.set_xlim(-0.5, size - 0.5)  # pixel centres at integers, as project() and imshow place them
    ax.set_ylim(size - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
