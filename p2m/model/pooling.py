"""Perceptual feature pooling (Pixel2Mesh Sec. 3.2): project vertices, sample the feature maps."""
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
    grid = ((uv + 0.5) / image_size * 2.0 - 1.0)[:, :, None, :]  # (N, V, 1, 2) in grid_sample's [-1, 1]
    pooled = [F.grid_sample(fmap, grid.to(fmap.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
              for fmap in feature_maps]  # each (N, C_l, V, 1)
    joined = torch.cat(pooled, dim=1) if combine == "cat" else torch.stack(pooled).sum(0)  # (N, C', V, 1)
    return joined[..., 0].transpose(1, 2)  # (N, V, C')
