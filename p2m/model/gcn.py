"""Graph convolutions and Pixel2Mesh's deformation block (Wang et al. 2018, Sec. 3.3)."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from p2m.geometry.laplacian import row_values


class NeighbourBags(NamedTuple):
    """A mean adjacency (:func:`p2m.geometry.mesh.mean_adjacency`) as ``F.embedding_bag`` bags over
    vertex-major features of a batch of N; bag ``i * N + n`` is vertex i's neighbours j in item n."""

    halves: Tensor  # rows (j * N + n) * 2 + 1 of a (V * N * 2, C) view of (V, N, 2C): the second halves
    rows: Tensor  # rows j * N + n of a (V * N, C) view of (V, N, C)
    offsets: Tensor  # (V * N,) where each bag starts in ``halves`` and ``rows``
    inv_degree: Tensor  # (V, 1, 1) the value of row i (1 / deg(i); 1 for a vertex without neighbours)


def neighbour_bags(adjacency: Tensor, batch: int) -> NeighbourBags:
    """The bags of a sparse CSR mean adjacency (V, V) for a batch of ``batch`` items: index arithmetic on
    its N * nnz taps, once per block and step."""
    crow, col = adjacency.crow_indices(), adjacency.col_indices()
    device = col.device
    degree = crow.diff()
    start = crow[:-1]
    n = torch.arange(batch, device=device)
    # tap t of bag (i, n), in order i, n, then i's neighbours: t = N * start[i] + n * deg(i) + k
    vertex = torch.repeat_interleave(torch.arange(len(degree), device=device), degree * batch,
                                     output_size=batch * len(col))
    within = torch.arange(batch * len(col), device=device) - batch * start[vertex]
    item = torch.div(within, degree[vertex], rounding_mode="floor")
    rows = col[start[vertex] + within - item * degree[vertex]] * batch + item
    offsets = (batch * start[:, None] + n * degree[:, None]).flatten()
    return NeighbourBags(rows * 2 + 1, rows, offsets, row_values(adjacency)[:, None, None])


class _SelfPlusNeighbourMean(torch.autograd.Function):
    """``both[..., :C] + A @ both[..., C:]`` per item, for vertex-major ``both`` (V, N, 2C) and the mean
    adjacency A of :class:`NeighbourBags`, with no copy of either half.

    A has a symmetric pattern and one value per row, ``A = diag(a) S``, so ``A.T g = S (a g)``: the backward
    pass is the same bags, summed, over ``a g``. Computed in the adjacency's dtype (float32 under autocast,
    as the sparse path)."""

    @staticmethod
    def forward(ctx, both: Tensor, bags: NeighbourBags) -> Tensor:
        V, N, C = both.shape[0], both.shape[1], both.shape[2] // 2
        ctx.bags, ctx.dtype = bags, both.dtype
        with torch.autocast(both.device.type, enabled=False):
            both = both.to(bags.inv_degree.dtype).contiguous()
            theirs = F.embedding_bag(bags.halves, both.view(-1, C), bags.offsets, mode="sum")
            return torch.addcmul(both[..., :C], theirs.view(V, N, C), bags.inv_degree).to(ctx.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        bags = ctx.bags
        V, N, C = grad.shape
        with torch.autocast(grad.device.type, enabled=False):
            grad = grad.to(bags.inv_degree.dtype).contiguous()
            spread = F.embedding_bag(bags.rows, (grad * bags.inv_degree).view(-1, C), bags.offsets, mode="sum")
            return torch.cat([grad, spread.view(V, N, C)], dim=-1).to(ctx.dtype), None


class GraphConv(nn.Module):
    """f'_i = W_self f_i + W_nbr mean_{j in N(i)} f_j + b, with separate self and neighbour weights."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.w_self = nn.Linear(in_dim, out_dim)
        self.w_nbr = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: Tensor, adjacency: Tensor | NeighbourBags, applied: Tensor | None = None) -> Tensor:
        """x: (V, N, C_in) vertex-major; adjacency: sparse (V, V) row-normalised, or its
        :func:`neighbour_bags` for this N -> (V, N, C_out).

        One matmul stacks the self and neighbour weights (two separate matmuls cost more in the backward
        pass); the neighbour mean reads the neighbour half of that product where it lies and adds the self
        half in the same pass (:class:`_SelfPlusNeighbourMean`). Given the sparse adjacency, the bags are
        built here; a block builds them once for its layers.

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
        if not isinstance(adjacency, NeighbourBags):
            adjacency = neighbour_bags(adjacency, x.shape[1])
        return _SelfPlusNeighbourMean.apply(both, adjacency)

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
        adjacency = neighbour_bags(adjacency, verts.shape[1])  # shared by the block's layers
        h = torch.relu(self.inp(features, adjacency, applied))
        for conv1, conv2 in self.res:
            h = 0.5 * (h + torch.relu(conv2(torch.relu(conv1(h, adjacency)), adjacency)))
        return verts + self.out(h, adjacency), h
