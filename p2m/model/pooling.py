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
    index, weight = _taps(uv.to(table.dtype), sizes, image_size)  # (N, V, 4L) or (V, N, 4L)
    offset = torch.arange(N, device=uv.device) * T  # each item's first row of the (N * T, C) table
    index = index + (offset[:, None, None] if batch_dim == 0 else offset[None, :, None])
    out = _WeightedBags.apply(index.flatten(0, 1), table.reshape(N * T, -1), weight.flatten(0, 1))
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
            order = torch.argsort(flat)
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
    covering the ``image_size`` image: for each point the four neighbouring pixels of each map (row-major
    indices into the L maps' rows, LongTensor (N, V, 4L)) and their weights (N, V, 4L), zero for a pixel
    outside its map (zero padding), differentiable in ``uv``. All maps and corners at once: a few operations
    on (N, V, L, 2) tensors rather than a few dozen per map and corner."""
    hw = torch.tensor(sizes, dtype=uv.dtype, device=uv.device)  # (L, 2): H, W
    offsets = torch.tensor([0] + [h * w for h, w in sizes][:-1], device=uv.device).cumsum(0)  # (L,)
    # grid_sample's unnormalised coordinates, (N, V, L, 2) as (x, y)
    xy = (uv[..., None, :] + 0.5) * (hw.flip(-1) / image_size) - 0.5
    lo = xy.detach().floor()
    frac = xy - lo
    corner = torch.tensor([0.0, 1.0], dtype=uv.dtype, device=uv.device)
    pos = lo[..., None] + corner  # (N, V, L, 2 axes, 2 corners): the pixel's x (then y) at each corner
    last = (hw.flip(-1) - 1)[..., None]  # (L, 2, 1): W - 1, H - 1
    inside = (pos >= 0) & (pos <= last)
    along = torch.where(inside, torch.stack([1 - frac, frac], dim=-1), 0.0)  # (N, V, L, 2, 2): 1-D weights
    # a tap off the map (or of a non-finite point) reads the map's pixel 0 at weight 0
    pos = torch.minimum(torch.nan_to_num(pos, nan=0.0).clamp(min=0), last).long()
    x, y = pos.unbind(-2)  # (N, V, L, 2) each
    wx, wy = along.unbind(-2)
    width = torch.tensor([w for _, w in sizes], device=uv.device)[:, None, None]  # (L, 1, 1)
    index = y[..., :, None] * width + x[..., None, :] + offsets[:, None, None]  # (N, V, L, 2 (y), 2 (x))
    weight = wy[..., :, None] * wx[..., None, :]
    return index.flatten(2), weight.flatten(2)
