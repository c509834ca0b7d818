"""Pixel2Mesh's move term: how far a deformation block moves the vertices it receives."""
from __future__ import annotations

from torch import Tensor


def move_loss(before: Tensor, after: Tensor) -> Tensor:
    """The mean squared displacement of each vertex through a block.

    The reference implementation (the authors' TensorFlow ``laplace_loss`` and noahcao/Pixel2Mesh's
    ``P2MLoss.laplace_regularization``) adds it, with the Laplacian term, on blocks 2 and 3, whose input
    is the previous block's unpooled output. Where the Laplacian-change term penalises only what a
    block does to the local shape, this one penalises every displacement, rigid ones included.

    Args:
        before, after: FloatTensor (N, V, 3), the vertices entering and leaving a deformation block.

    Returns:
        FloatTensor (N,): mean over vertices of |after - before|^2.
    """
    if before.shape != after.shape:
        raise ValueError(f"before and after must have the same shape, got {tuple(before.shape)} and "
                         f"{tuple(after.shape)}")
    return (after - before).pow(2).sum(-1).mean(-1)
