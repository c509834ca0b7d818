"""Graph convolutions and Pixel2Mesh's deformation block (Wang et al. 2018, Sec. 3.3)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from p2m.geometry.laplacian import neighbor_mean


class GraphConv(nn.Module):
    """f'_i = W_self f_i + W_nbr mean_{j in N(i)} f_j + b, with separate self and neighbour weights."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.w_self = nn.Linear(in_dim, out_dim)
        self.w_nbr = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        """x: (N, V, C_in); adjacency: sparse (V, V) row-normalised -> (N, V, C_out)."""
        # W_nbr is linear without bias, so W_nbr(mean x) = mean(W_nbr x): average the narrower side
        return self.w_self(x) + neighbor_mean(self.w_nbr(x), adjacency)


class DeformationBlock(nn.Module):
    """``layers`` graph convolutions: an input layer, residual pairs, and an output layer that
    predicts a per-vertex offset. Returns the moved vertices and the hidden features."""

    def __init__(self, in_dim: int, hidden_dim: int, layers: int):
        super().__init__()
        if layers < 2:
            raise ValueError(f"layers must be >= 2, got {layers}")
        self.inp = GraphConv(in_dim, hidden_dim)
        self.res = nn.ModuleList(
            nn.ModuleList([GraphConv(hidden_dim, hidden_dim), GraphConv(hidden_dim, hidden_dim)])
            for _ in range((layers - 2) // 2))
        self.out = GraphConv(hidden_dim, 3)
        with torch.no_grad():  # start close to the identity deformation (not at it: every layer gets a gradient)
            for p in self.out.parameters():
                p.mul_(0.1)

    def forward(self, verts: Tensor, features: Tensor, adjacency: Tensor) -> tuple[Tensor, Tensor]:
        """verts (N, V, 3), features (N, V, C_in) -> (moved verts (N, V, 3), hidden (N, V, hidden_dim))."""
        h = torch.relu(self.inp(features, adjacency))
        for conv1, conv2 in self.res:
            h = 0.5 * (h + torch.relu(conv2(torch.relu(conv1(h, adjacency)), adjacency)))
        return verts + self.out(h, adjacency), h
