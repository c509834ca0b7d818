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


def sample_rows(table: Tensor, sizes: list[tuple[int, int]], uv: Tensor, image_size: int) -> Tensor:
    """The sum over several maps, given as the rows of one table, of each one sampled at ``uv``.

    Args:
        table: (N, T, C): the pixels of maps of sizes ``sizes`` (H, W), one after the other, as
            :func:`pixel_rows` lays them out (T = sum H * W).
        uv: (N, V, 2) pixel coordinates in the ``image_size`` image the maps cover.

    Returns:
        (N, V, C).
    """
    N, V, _ = uv.shape
    T = table.shape[1]
    index, weight = [], []
    offset = 0
    for H, W in sizes:
        i, w = _taps(uv.to(table.dtype), H, W, image_size)
        index.append(i + offset)
        weight.append(w)
        offset += H * W
    index = torch.cat(index, dim=-1) + (torch.arange(N, device=uv.device) * T)[:, None, None]  # (N, V, 4L)
    weight = torch.cat(weight, dim=-1)
    out = F.embedding_bag(index.reshape(N * V, -1), table.reshape(N * T, -1), mode="sum",
                          per_sample_weights=weight.reshape(N * V, -1))
    return out.view(N, V, -1)


def _taps(uv: Tensor, H: int, W: int, image_size: int) -> tuple[Tensor, Tensor]:
    """Bilinear taps of an (H, W) map covering the ``image_size`` image: for each point its four
    neighbouring pixels (row-major indices, LongTensor (N, V, 4)) and their weights (N, V, 4), zero for
    a pixel outside the map (zero padding), differentiable in ``uv``."""
    x = (uv[..., 0] + 0.5) * (W / image_size) - 0.5  # grid_sample's unnormalised coordinate
    y = (uv[..., 1] + 0.5) * (H / image_size) - 0.5
    x0, y0 = x.detach().floor(), y.detach().floor()
    fx, fy = x - x0, y - y0
    index, weight = [], []
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi <= W - 1) & (yi >= 0) & (yi <= H - 1)
        # a tap off the map (or of a non-finite point) reads pixel 0 at weight 0
        col = torch.nan_to_num(xi, nan=0.0).clamp(0, W - 1)
        row = torch.nan_to_num(yi, nan=0.0).clamp(0, H - 1)
        index.append((row * W + col).long())
        weight.append(torch.where(inside, w, torch.zeros_like(w)))
    return torch.stack(index, dim=-1), torch.stack(weight, dim=-1)
