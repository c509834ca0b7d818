"""Pixel2Mesh: image features -> three deformation blocks with unpooling between them."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from p2m.config import ModelConfig
from p2m.data.camera import project
from p2m.model.backbone import ResNet18Features
from p2m.model.gcn import DeformationBlock
from p2m.model.pooling import pixel_rows, sample_rows
from p2m.model.template import build_template, unpool


class MeshOutput(NamedTuple):
    """Per stage s = 0, 1, 2: verts[s] (N, V_s, 3) after block s, and before[s] (N, V_s, 3), the
    vertices that entered block s (after unpooling), for the Laplacian-change loss."""

    verts: list[Tensor]
    before: list[Tensor]


class LevelGraph(NamedTuple):
    """Connectivity of one template level on the model's device (see :class:`p2m.model.template.MeshLevel`)."""

    faces: Tensor  # (F, 3)
    edges: Tensor  # (E, 2)
    adjacency: Tensor  # (V, V) sparse CSR, row-normalised
    face_pairs: Tensor  # (A, 2)


class Pixel2Mesh(nn.Module):
    def __init__(self, cfg: ModelConfig, image_size: int):
        super().__init__()
        self.image_size = image_size
        self.backbone = ResNet18Features(cfg.backbone_weights or None, cfg.feature_levels, cfg.backbone_norm)
        template = build_template(cfg.template, cfg.mesh_pos)
        self.register_buffer("template_verts", template.verts)
        for i, level in enumerate(template.levels):  # buffers, so .to(device) moves them
            for name in LevelGraph._fields:
                self.register_buffer(f"_l{i}_{name}", getattr(level, name), persistent=False)
        H = cfg.hidden_dim
        # The first graph convolution of a block is linear in the pooled features, and bilinear sampling
        # commutes with a linear map of the channels, so the maps are projected (1x1 conv, per block)
        # before sampling: P = 2H channels, enough for that layer's self and neighbour weights (rank
        # <= 2H) to equal any on the raw sum(C_l) channels, at a fraction of the per-vertex work.
        P = self.projected_channels = 2 * H
        self.feature_proj = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(c, P, kernel_size=1, bias=False) for c in self.backbone.level_channels)
            for _ in range(3))
        self.blocks = nn.ModuleList([DeformationBlock(P + 3, H, cfg.layers_per_block),
                                     DeformationBlock(P + 3 + H, H, cfg.layers_per_block),
                                     DeformationBlock(P + 3 + H, H, cfg.layers_per_block)])

    def level(self, i: int) -> LevelGraph:
        """The connectivity of level i (0, 1, 2) on the model's device."""
        return LevelGraph(*(getattr(self, f"_l{i}_{name}") for name in LevelGraph._fields))

    def forward(self, images: Tensor) -> MeshOutput:
        """images (N, 3, S, S) -> :class:`MeshOutput`."""
        N = images.shape[0]
        maps = self.backbone(images)
        rows = [pixel_rows(fmap).contiguous() for fmap in maps]  # (N, H_l * W_l, C_l), shared by the blocks
        sizes = [fmap.shape[-2:] for fmap in maps]
        # the blocks work vertex-major, (V, N, C): see GraphConv
        verts = self.template_verts[:, None].expand(-1, N, -1)
        hidden = None
        out, before = [], []
        for i, (block, proj) in enumerate(zip(self.blocks, self.feature_proj)):
            adjacency = self.level(i).adjacency
            if i > 0:
                prev_edges = self.level(i - 1).edges
                verts, hidden = unpool(verts, prev_edges, dim=0), unpool(hidden, prev_edges, dim=0)
            # The block's input is [pooled projected features | verts | hidden]. Its first layer's weights
            # on the pooled part are linear too, so they fold into the projection (an (2H, P) by (P, C_l)
            # product per map) and are applied to the maps' few pixels, not to every vertex; with the
            # pixels as rows (channels last) the products come out as the sampler's table.
            lead = block.inp.leading_weights(self.projected_channels)  # (2H, P)
            table = torch.cat([r @ (lead @ conv.weight.flatten(1)).T for conv, r in zip(proj, rows)], dim=1)
            uv = project(verts, self.image_size)  # (V, N, 2)
            applied = sample_rows(table, sizes, uv, self.image_size, batch_dim=1)  # (V, N, 2H)
            before.append(verts.transpose(0, 1))
            rest = verts if hidden is None else torch.cat([verts, hidden], dim=-1)
            verts, hidden = block(verts, rest, adjacency, applied)
            out.append(verts.transpose(0, 1))  # (N, V, 3)
        return MeshOutput(out, before)
