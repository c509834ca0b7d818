"""Ray-cast rendering of a camera-frame mesh into a Pixel2Mesh-style RGBA view.

Rays leave the camera at the origin through sub-pixel positions given by
:func:`p2m.data.camera.pixel_rays`, the inverse of the projection the data and the model use, so a
surface point always lands on the pixel that shows it.
"""
from __future__ import annotations

import numpy as np
import trimesh

from p2m.data.camera import pixel_rays

_LIGHT = np.array([-0.4, 0.6, 0.7]) / np.linalg.norm([-0.4, 0.6, 0.7])  # camera frame: upper left, towards the viewer
_AMBIENT = 0.35


def render_rgba(mesh: trimesh.Trimesh, face_colors: np.ndarray, image_size: int, supersample: int = 2) -> np.ndarray:
    """Render with Lambertian shading and an antialiased alpha mask.

    Args:
        mesh: triangles in the camera frame (camera at the origin looking along -Z).
        face_colors: (F, 3) float base colour of each face in [0, 1].
        image_size: S, the side of the output image.
        supersample: k, rays per pixel along each axis (k * k per pixel).

    Returns:
        ndarray (S, S, 4) uint8: straight (not premultiplied) RGB and alpha = covered fraction.
    """
    S, k = image_size, supersample
    dirs = pixel_rays(S, k).reshape(-1, 3)  # (S*k*S*k, 3)
    origins = np.zeros_like(dirs)
    hit_face = _intersector(mesh).intersects_first(origins, dirs)  # (R,), -1 for a miss
    hit = hit_face >= 0
    normals = mesh.face_normals[hit_face[hit]]  # (H, 3)
    facing = np.abs(normals @ _LIGHT)  # thin parts are seen from both sides
    shade = _AMBIENT + (1.0 - _AMBIENT) * facing
    rgb = np.zeros((dirs.shape[0], 3))
    rgb[hit] = face_colors[hit_face[hit]] * shade[:, None]
    # Each pixel averages the sub-pixel samples within 0.75 px of its centre (a 1.5-px filter, the
    # width Blender renders with), so every pixel a surface point rounds to has some coverage.
    weight, total = _filter_sum(hit.reshape(S * k, S * k).astype(np.float64), S, k)
    rgb, _ = _filter_sum(rgb.reshape(S * k, S * k, 3), S, k)
    color = np.where(weight[..., None] > 0, rgb / np.maximum(weight, 1e-12)[..., None], 0.0)
    alpha = weight / total
    out = np.concatenate([color, alpha[..., None]], axis=-1)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def _filter_sum(grid: np.ndarray, S: int, k: int) -> tuple[np.ndarray, float]:
    """Weighted sums over each pixel's own k x k samples (weight 1) and a ring of ceil(k/4) samples
    around them (weight 1/2). grid: (S*k, S*k, ...) -> ((S, S, ...), total weight per pixel)."""
    m = -(-k // 4)
    taps = np.r_[np.full(m, 0.5), np.ones(k), np.full(m, 0.5)]  # 1-D weights across k + 2m samples
    pad = [(m, m), (m, m)] + [(0, 0)] * (grid.ndim - 2)
    padded = np.pad(grid, pad)
    out = 0.0
    for i, wi in enumerate(taps):
        for j, wj in enumerate(taps):
            out = out + wi * wj * padded[i:i + S * k:k, j:j + S * k:k]
    return out, float(taps.sum() ** 2)


def _intersector(mesh: trimesh.Trimesh):
    if trimesh.ray.has_embree:
        from trimesh.ray.ray_pyembree import RayMeshIntersector

        return RayMeshIntersector(mesh)
    return trimesh.ray.ray_triangle.RayMeshIntersector(mesh)  # slow, but correct without embreex
