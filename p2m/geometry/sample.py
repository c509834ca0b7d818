"""Differentiable point sampling on a mesh surface (as Mesh R-CNN's ``sample_points_from_meshes``)."""
from __future__ import annotations

import torch
from torch import Tensor

from p2m.geometry.mesh import face_normals


def sample_surface_points(verts: Tensor, faces: Tensor, num_samples: int,
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Points drawn uniformly by area on each mesh of a batch, differentiable in ``verts``.

    Faces are drawn in proportion to their area (the draw itself carries no gradient), and a point
    inside each drawn face is a barycentric mix of its corners, so gradients reach the vertices.

    Args:
        verts: FloatTensor (N, V, 3); faces: LongTensor (F, 3) shared by the batch.
        num_samples: P >= 1 points per mesh.
        generator: optional torch.Generator for the draws.

    Returns:
        (points, normals): FloatTensor (N, P, 3) each; normals are the unit normals of the faces
        the points lie on.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must have shape (N, V, 3), got {tuple(verts.shape)}")
    N = verts.shape[0]
    fn = face_normals(verts, faces, normalized=False)  # (N, F, 3), length = 2 * area
    with torch.no_grad():
        area = fn.norm(dim=-1).float()  # (N, F)
        area = torch.where(area.sum(-1, keepdim=True) > 0, area, torch.ones_like(area))  # degenerate: uniform
        face_idx = torch.multinomial(area, num_samples, replacement=True, generator=generator)  # (N, P)
        u = torch.rand(N, num_samples, 1, device=verts.device, generator=generator)
        v = torch.rand(N, num_samples, 1, device=verts.device, generator=generator)
        su = u.sqrt()  # uniform on the triangle (Osada et al. 2002)
        w0, w1, w2 = 1 - su, su * (1 - v), su * v  # (N, P, 1) each
    corners = faces[face_idx]  # (N, P, 3)
    batch = torch.arange(N, device=verts.device)[:, None]
    v0, v1, v2 = (verts[batch, corners[..., i]] for i in range(3))  # (N, P, 3) each
    points = w0.to(verts.dtype) * v0 + w1.to(verts.dtype) * v1 + w2.to(verts.dtype) * v2
    normals = torch.nn.functional.normalize(fn.gather(1, face_idx[..., None].expand(-1, -1, 3)), dim=-1, eps=1e-12)
    return points, normals
