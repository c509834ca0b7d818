"""Edge regularisers (Pixel2Mesh, Wang et al. 2018, Sec. 3.5)."""
from __future__ import annotations

from torch import Tensor


def edge_length_loss(verts: Tensor, edges: Tensor) -> Tensor:
    """Pixel2Mesh's edge loss: the mean squared edge length, which keeps vertices from flying away.

    Args:
        verts: FloatTensor (N, V, 3); edges: LongTensor (E, 2).

    Returns:
        FloatTensor (N,).
    """
    return _edge_vectors(verts, edges).pow(2).sum(-1).mean(-1)


def edge_target_loss(verts: Tensor, edges: Tensor, target_length: float) -> Tensor:
    """The seed paper's form: mean squared deviation of edge lengths from ``target_length``. Returns (N,)."""
    if target_length < 0:
        raise ValueError(f"target_length must be >= 0, got {target_length}")
    return (_edge_vectors(verts, edges).norm(dim=-1) - target_length).pow(2).mean(-1)


def _edge_vectors(verts: Tensor, edges: Tensor) -> Tensor:
    if edges.numel() == 0:
        return verts.new_zeros(verts.shape[0], 1, 3) * verts[:, :1]  # zero loss that keeps the graph
    return verts[:, edges[:, 0]] - verts[:, edges[:, 1]]  # (N, E, 3)
