"""Laplacian regularisers on a mesh graph (uniform weights, as in Pixel2Mesh)."""
from __future__ import annotations

from torch import Tensor


def neighbor_mean(x: Tensor, nbr_idx: Tensor, nbr_mask: Tensor) -> Tensor:
    """Mean of each vertex's neighbours: x (N, V, C), nbr_idx/nbr_mask (V, K) -> (N, V, C)."""
    w = nbr_mask.to(x.dtype)[None, :, :, None]  # (1, V, K, 1)
    return (x[:, nbr_idx] * w).sum(2) / w.sum(2).clamp(min=1)


def laplacian_coords(verts: Tensor, nbr_idx: Tensor, nbr_mask: Tensor) -> Tensor:
    """delta_i = v_i - mean of v_i's neighbours.

    Args:
        verts: FloatTensor (N, V, 3); nbr_idx, nbr_mask: (V, K) from :func:`p2m.geometry.mesh.neighbor_table`.

    Returns:
        FloatTensor (N, V, 3).
    """
    return verts - neighbor_mean(verts, nbr_idx, nbr_mask)


def laplacian_change_loss(before: Tensor, after: Tensor, nbr_idx: Tensor, nbr_mask: Tensor) -> Tensor:
    """Pixel2Mesh's Laplacian loss: how much a block changed the Laplacian coordinates.

    Args:
        before, after: FloatTensor (N, V, 3), the vertices entering and leaving a deformation block.

    Returns:
        FloatTensor (N,): mean over vertices of |delta_after - delta_before|^2.
    """
    diff = laplacian_coords(after, nbr_idx, nbr_mask) - laplacian_coords(before, nbr_idx, nbr_mask)
    return diff.pow(2).sum(-1).mean(-1)


def laplacian_smoothing_loss(verts: Tensor, nbr_idx: Tensor, nbr_mask: Tensor) -> Tensor:
    """The seed paper's plain smoothness: mean |delta_i| over vertices. Returns (N,)."""
    return laplacian_coords(verts, nbr_idx, nbr_mask).norm(dim=-1).mean(-1)
