"""Graph convolutions and Pixel2Mesh's deformation block (Wang et al. 2018, Sec. 3.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from p2m.geometry.laplacian import neighbor_mean_rows


class GraphConv(nn.Module):
    """f'_i = W_self f_i + W_nbr mean_{j in N(i)} f_j + b, with separate self and neighbour weights."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.w_self = nn.Linear(in_dim, out_dim)
        self.w_nbr = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: Tensor, adjacency: Tensor, applied: Tensor | None = None) -> Tensor:
        """x: (V, N, C_in) vertex-major; adjacency: sparse (V, V) row-normalised -> (V, N, C_out).

        Vertex-major, so that the neighbour mean is one sparse matmul on a (V, N * C) view: no transposed
        copy out of it, and in only the copy of the neighbour half of the one stacked matmul (two separate
        matmuls, each half contiguous, cost more in the backward pass than the copy saves).

        ``applied``: (V, N, 2 C_out), the contributions of the input's first ``C_in - x.shape[-1]``
        channels, already multiplied by this layer's self and neighbour weights (``[self | nbr]``, see
        :meth:`leading_weights`); ``x`` then holds only the remaining channels.
        """
        # W_nbr is linear without bias, so W_nbr(mean x) = mean(W_nbr x): average the narrower side
        out = self.w_self.out_features
        columns = slice(self.w_self.in_features - x.shape[-1], None)
        weight = torch.cat([self.w_self.weight[:, columns], self.w_nbr.weight[:, columns]])  # (2 C_out, C)
        bias = torch.cat([self.w_self.bias, self.w_self.bias.new_zeros(out)])  # fused into the matmul
        both = F.linear(x, weight, bias)  # (V, N, 2 C_out)
        if applied is not None:
            both = both + applied
        mine, theirs = both.split(out, dim=-1)  # (split's backward is one concatenation, not two zero-fills)
        return mine + neighbor_mean_rows(theirs, adjacency)

    def leading_weights(self, channels: int) -> Tensor:
        """(2 C_out, channels): the self weights over the neighbour weights of the input's first ``channels``
        channels."""
        return torch.cat([self.w_self.weight[:, :channels], self.w_nbr.weight[:, :channels]])


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

    def forward(self, verts: Tensor, features: Tensor, adjacency: Tensor,
                applied: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """verts (V, N, 3), features (V, N, C_in), vertex-major (:class:`GraphConv`) -> (moved verts (V, N, 3),
        hidden (V, N, hidden_dim)).

        ``applied``: the input layer's leading channels already weighted (:meth:`GraphConv.forward`).
        """
        h = torch.relu(self.inp(features, adjacency, applied))
        for conv1, conv2 in self.res:
            h = 0.5 * (h + torch.relu(conv2(torch.relu(conv1(h, adjacency)), adjacency)))
        return verts + self.out(h, adjacency), h
