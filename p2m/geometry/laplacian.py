"""Laplacian regularisers on a mesh graph (uniform weights, as in Pixel2Mesh)."""
from __future__ import annotations

from torch import Tensor


def laplacian_coords(verts: Tensor, nbr_idx: Tensor, nbr_mask: Tensor) -> Tensor:
    """delta_i = v_i - mean of v_i's neighbours.

    Args:
        verts: FloatTensor (N, V, 3); nbr_idx, nbr_mask: (V, K) from :func:`p2m.geometry.mesh.neighbor_table`.

    Returns:
        FloatTensor (N, V, 3).
    """
    nbrs = verts[:, nbr_idx]  # (N, V, K, 3)
    w = nbr_mask.to(verts.dtype)
    mean = (nbrs * w[None, :, :, None]).sum(2) / w.sum(1).clamp(min=1)[None, :, None]
    return verts - mean


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
