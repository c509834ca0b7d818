"""The Pixel2Mesh camera: one pinhole convention, owned here, used by the data and the model.

Points live in the camera frame of their view: the camera sits at the origin, looks along -Z, Y is
up. The authors' renderings and ground truth (checked on the real ShapeNet-P2M sample) follow

    u = 248 * X / (-Z) + 111.5,     v = 248 * Y / Z + 111.5      for a 224-px image,

with every number scaled by S / 224 for an S-px image; u runs right along image columns and v down
along rows, pixel centres at integer (u, v).

Poses follow the 3D-R2N2 renderings the data comes from (and Pixel2Mesh's ``camera_info``): a
camera at ``distance`` from the object's centre, at an azimuth and elevation, with no in-plane
rotation. The authors scale ShapeNet's unit-diagonal models by 1 / 1.75 before the transform.
"""
from __future__ import annotations

import numpy as np

FOCAL_224 = 248.0  # focal length in pixels for a 224-px image
CENTER_224 = 111.5  # principal point (u and v) for a 224-px image
SHAPENET_TO_P2M_SCALE = 1.0 / 1.75  # ShapeNet unit-diagonal models -> Pixel2Mesh camera-frame units


def project(points, image_size: int):
    """Project camera-frame points to pixel coordinates.

    Works unchanged on numpy arrays and torch tensors (and keeps autograd), so the data layer and the
    model's feature pooling share this one function.

    Args:
        points: array or tensor (..., 3): X, Y, Z in the camera frame, Z < 0 in front of the camera.
        image_size: S, the side of the square image in pixels.

    Returns:
        array or tensor (..., 2): (u, v) pixel coordinates, u along columns, v along rows.
    """
    focal, center = intrinsics(image_size)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    u = focal * x / (-z) + center
    v = focal * y / z + center
    if isinstance(points, np.ndarray):
        return np.stack([u, v], axis=-1)
    return _stack(u, v)


def intrinsics(image_size: int) -> tuple[float, float]:
    """(focal length, principal point) in pixels for an ``image_size``-px square image."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    scale = image_size / 224.0
    return FOCAL_224 * scale, CENTER_224 * scale


def pixel_rays(image_size: int, supersample: int = 1) -> np.ndarray:
    """Unit ray directions (camera frame) through a grid of sub-pixel positions: the inverse of project.

    Returns:
        ndarray (S * k, S * k, 3) float64 for k = ``supersample``; entry [r, c] is the ray through
        v = (r + 0.5) / k - 0.5 and u = (c + 0.5) / k - 0.5, so k = 1 gives the pixel centres.
    """
    focal, center = intrinsics(image_size)
    k = int(supersample)
    coords = (np.arange(image_size * k) + 0.5) / k - 0.5
    v, u = np.meshgrid(coords, coords, indexing="ij")
    dirs = np.stack([(u - center) / focal, -(v - center) / focal, -np.ones_like(u)], axis=-1)
    return dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


def camera_rotation(azimuth_deg: float, elevation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """World -> camera rotation and the camera's unit position for a 3D-R2N2 view.

    Returns:
        (R, c): R (3, 3) with rows the camera's X, Y, Z axes in world coordinates; c (3,) the unit
        vector from the object's centre to the camera. A world point p maps to R @ (p - distance * c).
    """
    theta, phi = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    c = np.array([np.cos(phi) * np.cos(theta), np.sin(phi), np.cos(phi) * np.sin(theta)])
    axis_z = c
    axis_x = np.cross([0.0, 1.0, 0.0], axis_z)
    axis_x /= np.linalg.norm(axis_x)
    axis_y = np.cross(axis_z, axis_x)
    return np.stack([axis_x, axis_y, axis_z]), c


def world_to_camera(points: np.ndarray, normals: np.ndarray, azimuth_deg: float, elevation_deg: float,
                    distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Move object-centred points (P, 3) and normals (P, 3) into a view's camera frame."""
    rot, c = camera_rotation(azimuth_deg, elevation_deg)
    return (points - distance * c) @ rot.T, normals @ rot.T


def _stack(u, v):
    import torch  # only reached with tensors, so the numpy path never needs torch

    return torch.stack([u, v], dim=-1)
