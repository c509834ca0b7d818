"""Perceptual feature pooling (Pixel2Mesh Sec. 3.2): project vertices, sample the feature maps.

Sampling is ``F.grid_sample``'s (bilinear, zero padding, ``align_corners=False``), computed as one weighted
``F.embedding_bag`` over the maps' pixels laid out channels-last: four taps per map, and a single bag of
4 x levels taps when the maps are summed. On a CPU its backward accumulates whole channel rows, where
``grid_sample``'s scatters channel by channel; values and gradients, to the maps and to the vertices, are
``grid_sample``'s (tested against it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from p2m.data.camera import project


def pool_features(feature_maps: list[Tensor], verts: Tensor, image_size: int, combine: str = "cat") -> Tensor:
    """Bilinearly sample every feature map at each vertex's projection.

    Args:
        feature_maps: list of FloatTensor (N, C_l, H_l, W_l) covering the whole input image.
        verts: FloatTensor (N, V, 3) in the camera frame.
        image_size: S, the side of the input image the maps were computed from.
        combine: "cat" the maps' channels, or "sum" maps of equal channel count.

    Returns:
        FloatTensor (N, V, sum C_l) ("cat") or (N, V, C) ("sum"); points projecting outside the
        image get zeros.
    """
    if combine not in ("cat", "sum"):
        raise ValueError(f"combine must be 'cat' or 'sum', got {combine!r}")
    uv = project(verts, image_size)  # (N, V, 2), pixel centres at integers
    if combine == "cat":
        return torch.cat([sample_rows(pixel_rows(f), [f.shape[-2:]], uv, image_size) for f in feature_maps], dim=-1)
    table = torch.cat([pixel_rows(f) for f in feature_maps], dim=1)
    return sample_rows(table, [f.shape[-2:] for f in feature_maps], uv, image_size)


def pixel_rows(fmap: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, H * W, C): a map's pixels as rows, row-major (a view)."""
    return fmap.flatten(2).transpose(1, 2)


def sample_rows(table: Tensor, sizes: list[tuple[int, int]], uv: Tensor, image_size: int,
                batch_dim: int = 0) -> Tensor:
    """The sum over several maps, given as the rows of one table, of each one sampled at ``uv``.

    Args:
        table: (N, T, C): the pixels of maps of sizes ``sizes`` (H, W), one after the other, as
            :func:`pixel_rows` lays them out (T = sum H * W).
        uv: (N, V, 2) pixel coordinates in the ``image_size`` image the maps cover, or (V, N, 2) with
            ``batch_dim`` 1 (the model's vertex-major layout).

    Returns:
        (N, V, C), or (V, N, C) with ``batch_dim`` 1.
    """
    N, T = table.shape[:2]
    index, weight = _taps(uv.to(table.dtype), sizes, image_size)  # (4L, M) for the M points in uv's order
    item = torch.arange(N, device=uv.device) * T  # each item's first row of the (N * T, C) table
    first = (item[:, None] if batch_dim == 0 else item[None, :]).expand(uv.shape[:2]).reshape(-1)  # (M,)
    # one bag of 4L taps per point: (M, 4L), copied once from the layout the taps were computed in
    index, weight = (index + first).T.contiguous(), weight.T.contiguous()
    out = _WeightedBags.apply(index, table.reshape(N * T, -1), weight)
    return out.view(*uv.shape[:2], -1)


class _WeightedBags(torch.autograd.Function):
    """``F.embedding_bag(index, table, mode="sum", per_sample_weights=weight)`` for an (M, K) ``index`` (M bags
    of K taps), with the table's gradient computed as bags too: the transposed sampling, each table row the
    weighted sum of the gradients of the points that read it. ATen's dense backward accumulates the same sums
    row by row after sorting the taps; gathering them with one more ``embedding_bag`` over the tap order
    (``argsort`` of the indices) is about 3x faster on a CPU at stage 3, the same sums in another order."""

    @staticmethod
    def forward(ctx, index: Tensor, table: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(index, table, weight)
        return F.embedding_bag(index, table, mode="sum", per_sample_weights=weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor | None, Tensor | None]:
        index, table, weight = ctx.saved_tensors
        M, K = index.shape
        flat = index.flatten()
        grad_table = grad_weight = None
        if ctx.needs_input_grad[1]:
            # the taps in table-row order, sorted on 32-bit keys (about 1.6x faster than 64-bit ones); stable, so
            # that each row's gradient sums its taps in one order from run to run
            keys = flat.to(torch.int32) if table.shape[0] <= torch.iinfo(torch.int32).max else flat
            order = torch.argsort(keys, stable=True)
            counts = torch.bincount(flat, minlength=table.shape[0])
            grad_table = F.embedding_bag(torch.div(order, K, rounding_mode="floor"), grad.contiguous(),
                                         torch.cumsum(counts, 0) - counts, mode="sum",
                                         per_sample_weights=weight.flatten()[order])
        if ctx.needs_input_grad[2]:  # the op autograd itself calls for embedding_bag's per_sample_weights
            bags = torch.arange(M, device=index.device)
            grad_weight = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad.contiguous(), table, flat, bags * K, bags.repeat_interleave(K), 0).view(M, K)
        return None, grad_table, grad_weight


def _taps(uv: Tensor, sizes: list[tuple[int, int]], image_size: int) -> tuple[Tensor, Tensor]:
    """Bilinear taps of L maps of ``sizes`` (H, W), laid out one after the other as in :func:`sample_rows`, each
    covering the ``image_size`` image: for each of the M points of ``uv`` (..., 2), flattened, the four
    neighbouring pixels of each map (row-major indices into the L maps' rows, LongTensor (4L, M)) and their
    weights (4L, M), zero for a pixel outside its map (zero padding), differentiable in ``uv``. All maps and
    corners at once, with the points along the last, contiguous dimension: the few operations on
    (2, 2, L, M) tensors run over long rows (with the points first, their innermost dimensions would be of
    size 2, which elementwise kernels cannot vectorise)."""
    hw = torch.tensor(sizes, dtype=uv.dtype, device=uv.device)  # (L, 2): H, W
    offsets = torch.tensor([0] + [h * w for h, w in sizes][:-1], device=uv.device).cumsum(0)  # (L,)
    extent = hw.flip(-1).T[:, :, None]  # (2 axes, L, 1): W, then H
    # grid_sample's unnormalised coordinates, (2 axes, L, M): x, then y
    xy = (uv.reshape(-1, 2).T[:, None, :] + 0.5) * (extent / image_size) - 0.5
    lo = xy.detach().floor()
    frac = xy - lo
    pos = torch.stack([lo, lo + 1], dim=1)  # (2 axes, 2 corners, L, M): the pixel's x (then y) at each corner
    last = (extent - 1)[:, None]  # (2, 1, L, 1): W - 1, H - 1
    inside = (pos >= 0) & (pos <= last)
    along = torch.where(inside, torch.stack([1 - frac, frac], dim=1), 0.0)  # (2, 2, L, M): 1-D weights
    # a tap off the map (or of a non-finite point) reads the map's pixel 0 at weight 0
    pos = torch.minimum(torch.nan_to_num(pos, nan=0.0).clamp(min=0), last).long()
    x, y = pos.unbind(0)  # (2 corners, L, M) each
    wx, wy = along.unbind(0)
    width = torch.tensor([w for _, w in sizes], device=uv.device)[:, None]  # (L, 1)
    index = y[:, None] * width + x[None, :] + offsets[:, None]  # (2 (y), 2 (x), L, M)
    weight = wy[:, None] * wx[None, :]
    return index.flatten(0, 2), weight.flatten(0, 2)
