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
    V = x.shape[1]
    with torch.autocast(x.device.type, enabled=False):
        rows = x.transpose(0, 1).to(adjacency.dtype)  # (V, N, C): vertex-major
        out = _NeighborMean.apply(rows.reshape(V, -1), adjacency)  # (V, N*C)
    return out.view(rows.shape).transpose(0, 1).to(x.dtype)


class _NeighborMean(torch.autograd.Function):
    """``adjacency @ flat`` whose backward needs no transposed copy of the adjacency.

    ``torch.sparse.mm``'s own backward builds ``adjacency.T`` in CSR (a sort) at every call. A mean
    adjacency (:func:`p2m.geometry.mesh.mean_adjacency`) has a symmetric pattern and one value per row,
    ``A = diag(a) S`` with S symmetric (``a_i`` = 1 / deg(i) as stored), so ``A.T g = S diag(a) g =
    diag(a)^-1 A diag(a) g``: one more product with A itself.
    """

    @staticmethod
    def forward(ctx, flat: Tensor, adjacency: Tensor) -> Tensor:
        ctx.adjacency = adjacency
        return torch.sparse.mm(adjacency, flat)

    @staticmethod
    def backward(ctx, grad: Tensor):
        adjacency = ctx.adjacency
        a = row_values(adjacency).to(grad.dtype)[:, None]
        return torch.sparse.mm(adjacency, grad * a) / a, None


def row_values(adjacency: Tensor) -> Tensor:
    """(V,): the one value of each row of a mean adjacency (:func:`p2m.geometry.mesh.mean_adjacency`),
    1 / deg(i), and 1 for a row without neighbours; no boolean indexing (no GPU sync)."""
    crow, values = adjacency.crow_indices(), adjacency.values()
    start = crow[:-1]
    first = values[start.clamp(max=len(values) - 1)] if len(values) else values.new_ones(len(start))
    return torch.where(crow.diff() > 0, first, 1.0)


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


def laplacian_smoothing_loss(verts: Tensor, adjacency: Tensor, squared: bool = False) -> Tensor:
    """Plain smoothness, mean over vertices of |delta_i| (the seed paper's text) or, ``squared``, of
    |delta_i|^2 (the seed reimplementation's code). Returns (N,)."""
    delta = laplacian_coords(verts, adjacency)  # (N, V, 3)
    return delta.pow(2).sum(-1).mean(-1) if squared else delta.norm(dim=-1).mean(-1)
