"""Laplacian regularisers on a mesh graph (uniform weights, as in Pixel2Mesh)."""
from __future__ import annotations

import torch
from torch import Tensor


def neighbor_mean(x: Tensor, adjacency: Tensor) -> Tensor:
    """Mean of each vertex's neighbours, as one sparse matmul over the whole batch.

    Args:
        x: FloatTensor (N, V, C); adjacency: sparse (V, V) from :func:`p2m.geometry.mesh.mean_adjacency`.

    Returns:
        Tensor (N, V, C) of x's dtype (computed in the adjacency's dtype, float32 unless the model was
        made float64, outside autocast).
    """
    N, V, C = x.shape
    with torch.autocast(x.device.type, enabled=False):
        flat = x.to(adjacency.dtype).transpose(0, 1).reshape(V, N * C)  # (V, N*C)
        out = torch.sparse.mm(adjacency, flat)  # (V, N*C)
    return out.reshape(V, N, C).transpose(0, 1).to(x.dtype)


def laplacian_coords(verts: Tensor, adjacency: Tensor) -> Tensor:
    """delta_i = v_i - mean of v_i's neighbours.

    Args:
        verts: FloatTensor (N, V, 3); adjacency: sparse (V, V) from :func:`p2m.geometry.mesh.mean_adjacency`.

    Returns:
        FloatTensor (N, V, 3).
    """
    return verts - neighbor_mean(verts, adjacency)


def laplacian_change_loss(before: Tensor, after: Tensor, adjacency: Tensor) -> Tensor:
    """Pixel2Mesh's Laplacian loss: how much a block changed the Laplacian coordinates.

    Args:
        before, after: FloatTensor (N, V, 3), the vertices entering and leaving a deformation block.

    Returns:
        FloatTensor (N,): mean over vertices of |delta_after - delta_before|^2.
    """
    diff = laplacian_coords(after, adjacency) - laplacian_coords(before, adjacency)
    return diff.pow(2).sum(-1).mean(-1)


def laplacian_smoothing_loss(verts: Tensor, adjacency: Tensor) -> Tensor:
    """The seed paper's plain smoothness: mean |delta_i| over vertices. Returns (N,)."""
    return laplacian_coords(verts, adjacency).norm(dim=-1).mean(-1)
